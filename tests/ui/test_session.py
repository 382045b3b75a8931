"""Browser sessions over HTTP (:mod:`clientregistry.ui.session`): the cookie's attributes,
who a cookie names, idle timeout, CSRF tokens (stale ones refused), logging out.

A small application of its own mounts the module's functions on a real registry (SQLite in a
temporary directory), so the contract single sign-on relies on is tested on its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI, Request, Response
from sqlalchemy import select

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.security import browser_sessions, passwords, users
from clientregistry.security.tokens import IssuedToken, login, now_utc, token_hash
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import Role
from clientregistry.store.models import AuditEvent, Token
from clientregistry.ui import session as ui_session

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PASSWORD = "a long enough password"


@dataclass
class Harness:
    context: RegistryContext
    app: FastAPI

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")


def _app(context: RegistryContext) -> FastAPI:
    app = FastAPI()

    @app.post("/start/{username}")
    def start(username: str, response: Response) -> dict[str, str]:
        with transaction(context.sessions, write=False) as db:
            user = users.require_user(db, username)
        opened = ui_session.start_browser_session(response, context, user)
        return {"csrf": opened.csrf}

    @app.post("/password-login")
    def password_login(response: Response) -> dict[str, str]:
        issued = login(context.sessions, "rita", PASSWORD, source_address=None, minutes=60)
        assert isinstance(issued, IssuedToken)
        opened = ui_session.adopt_login(response, context, issued)
        return {"csrf": opened.csrf}

    @app.get("/who")
    def who(request: Request) -> dict[str, str | None]:
        found = ui_session.current_session(request, context)
        return {"user": found.user.username if found else None}

    @app.post("/act")
    def act(request: Request) -> Response:
        found = ui_session.current_session(request, context)
        if found is None:
            return Response(status_code=401)
        ok = ui_session.check_csrf(request, found, request.query_params.get("csrf"))
        return Response(status_code=204 if ok else 403)

    @app.post("/logout")
    def logout(request: Request, response: Response) -> dict[str, bool]:
        ui_session.end_browser_session(request, response, context)
        return {"ok": True}

    return app


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    init_data_dir(tmp_path / "data", hostnames=[])
    context = RegistryContext.open(load_settings(tmp_path / "data", environ={}))
    with transaction(context.sessions) as db:
        users.add_user(db, "rita", PASSWORD, Role.REVIEWER)
        users.add_user(db, "otto", PASSWORD, Role.AUDITOR)
    yield Harness(context, _app(context))
    context.close()


def test_the_cookie_is_httponly_secure_strict_and_site_wide(harness: Harness) -> None:
    response = harness.client().post("/start/rita")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{ui_session.COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes


def test_the_cookie_names_its_person(harness: Harness) -> None:
    client = harness.client()
    assert client.get("/who").json() == {"user": None}
    client.post("/start/rita")
    assert client.get("/who").json() == {"user": "rita"}
    client.cookies.set(ui_session.COOKIE, "not-a-session")
    assert client.get("/who").json() == {"user": None}


def test_a_password_login_becomes_a_browser_session(harness: Harness) -> None:
    client = harness.client()
    client.post("/password-login")
    assert client.get("/who").json() == {"user": "rita"}


def test_an_api_token_is_not_a_browser_session(harness: Harness) -> None:
    issued = login(harness.context.sessions, "rita", PASSWORD, source_address=None, minutes=60)
    assert isinstance(issued, IssuedToken)
    client = harness.client()
    client.cookies.set(ui_session.COOKIE, issued.token)
    assert client.get("/who").json() == {"user": None}


def test_an_idle_session_ends(harness: Harness) -> None:
    client = harness.client()
    client.post("/start/rita")
    token = client.cookies[ui_session.COOKIE]
    idle = timedelta(minutes=harness.context.settings.idle_minutes)
    sessions = harness.context.sessions
    soon = now_utc() + idle - timedelta(seconds=5)
    assert browser_sessions.session_user(sessions, token, idle, now=soon) is not None
    # That request moved the session on: idle counts from it.
    later = soon + idle - timedelta(seconds=5)
    assert browser_sessions.session_user(sessions, token, idle, now=later) is not None
    assert browser_sessions.session_user(sessions, token, idle, now=later + idle) is None
    with transaction(sessions, write=False) as db:
        row = db.get(Token, token_hash(token))
        assert row is not None and row.revoked  # an idle session stays ended
    assert client.get("/who").json() == {"user": None}


def test_a_disabled_account_or_new_password_ends_its_sessions(harness: Harness) -> None:
    rita, otto = harness.client(), harness.client()
    rita.post("/start/rita")
    otto.post("/start/otto")
    with transaction(harness.context.sessions) as db:
        users.set_disabled(db, "rita")
        users.set_password(db, "otto", "another long password")
    assert rita.get("/who").json() == {"user": None}
    assert otto.get("/who").json() == {"user": None}


def test_csrf_tokens_are_per_session_and_checked(harness: Harness) -> None:
    client = harness.client()
    first = client.post("/start/rita").json()["csrf"]
    assert client.post("/act", params={"csrf": first}).status_code == 204
    assert client.post("/act").status_code == 403
    assert client.post("/act", params={"csrf": first + "x"}).status_code == 403
    assert client.post("/act", headers={ui_session.CSRF_HEADER: first}).status_code == 204
    cross = {"origin": "https://evil.example", ui_session.CSRF_HEADER: first}
    assert client.post("/act", headers=cross).status_code == 403
    # A new session (logging in again): the old session's forms are stale.
    second = client.post("/start/rita").json()["csrf"]
    assert second != first
    assert client.post("/act", params={"csrf": first}).status_code == 403
    assert client.post("/act", params={"csrf": second}).status_code == 204


def test_logging_out_revokes_clears_and_audits(harness: Harness) -> None:
    client = harness.client()
    client.post("/start/rita")
    token = client.cookies[ui_session.COOKIE]
    response = client.post("/logout")
    assert f'{ui_session.COOKIE}=""' in response.headers["set-cookie"]
    assert client.get("/who").json() == {"user": None}
    with transaction(harness.context.sessions, write=False) as db:
        row = db.get(Token, token_hash(token))
        assert row is not None and row.revoked
        events = db.scalars(select(AuditEvent).where(AuditEvent.event_type == "logout")).all()
        assert [e.agent for e in events] == ["rita"]
