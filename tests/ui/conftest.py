"""Fixtures of the web UI's browser tests: the real ``clientregistry serve`` over HTTPS (as
``tests/api`` starts it) and Debian's Chromium driven by Playwright.

Playwright's own browser builds cannot be downloaded here: it launches ``/usr/bin/chromium``
(``executable_path``), headless, with the network features that would phone out turned off.
The server's certificate is the registry's own CA's, which the browser context is told to
accept; a person's browser presents no client certificate.

``ui_server`` is one SQLite registry per test module, with accounts ``ada`` (admin),
``rita`` and ``dave`` (reviewers) and ``otto`` (auditor), made with the command line as an
operator would. ``browser`` is one Chromium for the session; ``signed_in(username)`` gives a
new browser context signed in as that account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_kit import ACCOUNTS, CHROMIUM, CHROMIUM_ARGS, add_account, api, sign_in


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, fresh_database: Any) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("ui-registry")
    with api.running_server(base, "sqlite", fresh_database) as server:
        for username, role in ACCOUNTS.items():
            add_account(server, username, role)
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Callable[..., Any]]:
    """Browser contexts (each its own cookies), closed at the end of the test. Any dialog
    (``alert``) a page opens fails the test: no page may run a script a Patient carries."""
    contexts: list[Any] = []
    dialogs: list[str] = []

    def make(locale: str = "en-GB") -> Any:
        context = browser.new_context(
            ignore_https_errors=True, locale=locale, viewport={"width": 1280, "height": 900}
        )
        context.on(
            "page", lambda p: p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        )
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert dialogs == [], f"a page opened dialogs: {dialogs}"


@pytest.fixture
def signed_in(ui_server: Any, new_context: Callable[..., Any]) -> Callable[..., Any]:
    """``signed_in("rita")``: a page of a new browser context, signed in as rita."""

    def make(username: str, locale: str = "en-GB") -> Any:
        page = new_context(locale).new_page()
        sign_in(page, ui_server.base_url, username)
        return page

    return make
