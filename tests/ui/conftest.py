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

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a password for the tests"
ACCOUNTS = {"ada": "admin", "rita": "reviewer", "dave": "reviewer", "otto": "auditor"}
AXE = Path(__file__).resolve().parents[1] / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where ``CR_UPDATE_SCREENSHOTS=1`` copies the screenshots the tests take."""


def _load_api_conftest() -> Any:
    """``tests/api/conftest.py`` (the server fixtures), under a name of its own."""
    path = Path(__file__).resolve().parents[1] / "api" / "conftest.py"
    spec = importlib.util.spec_from_file_location("api_server_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


api = _load_api_conftest()
RegistryServer = api.RegistryServer


def add_account(server: Any, username: str, role: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    made = subprocess.run(
        [
            str(api.CLI),
            "users",
            "add",
            username,
            "--role",
            role,
            "--data-dir",
            str(server.data_dir),
        ],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)


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


def sign_in(page: Any, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/ui/login")
    page.get_by_label(re.compile("Username|Nom d.utilisateur")).fill(username)
    page.get_by_label(re.compile("^(Password|Mot de passe)$")).fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^(Sign in|Se connecter)$")).click()


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


def check_accessibility(page: Any) -> None:
    """Run axe-core on the page; fail on any violation (WCAG 2.1 A and AA rules)."""
    # Evaluated through the DevTools protocol: the page's CSP rightly refuses a script tag.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => await axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}
        })"""
    )
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
    ]
    assert problems == [], f"{page.url}: " + "; ".join(problems)


def screenshot(page: Any, name: str, directory: Path) -> Path:
    """A full-page screenshot in ``directory`` (and in docs/ with CR_UPDATE_SCREENSHOTS=1)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path
