"""Single sign-on against a real OpenID Connect provider (npm ``oidc-provider``, started by
the test over HTTPS on a free port, ``tests/node/oidc-provider.mjs``): the authorization code
flow with PKCE from a browser's point of view (httpx, following the redirects by hand),
ending in a web UI browser session; and the refusals — a wrong audience, an expired ID token,
a missing or unmapped role claim, a state that is not the browser's, a local account's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import select

from clientregistry.security.browser_sessions import session_user
from clientregistry.store.db import session_factory
from clientregistry.store.models import AuditEvent, User

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENT_ID = "clientregistry"
ACCOUNTS: dict[str, dict[str, Any]] = {
    "rita": {"preferred_username": "rita.sso", "roles": ["cr-reviewer", "staff"]},
    "ada": {"preferred_username": "ada.sso", "roles": ["cr-admin", "cr-auditor"]},
    "norole": {"preferred_username": "norole.sso"},
    "guest": {"preferred_username": "guest.sso", "roles": ["cr-guest"]},
    "clash": {"preferred_username": "admin", "roles": ["cr-admin"]},
    "moved": {"preferred_username": "moved.sso", "roles": ["cr-auditor"]},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Provider:
    base_url: str
    directory: Path

    def tamper(self, ca: Path, **claims: Any) -> None:
        """Make the next ID token carry ``claims`` instead (signed with the provider's key)."""
        trust = ssl.create_default_context(cafile=str(ca))
        response = httpx.post(f"{self.base_url}/test/tamper", json=claims, verify=trust)
        assert response.status_code == 204, response.text


@contextlib.contextmanager
def oidc_provider(directory: Path, port: int, certs: Path, redirect_uri: str) -> Iterator[Provider]:
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "oidc-provider").is_dir(), "run .ci/install-system-deps"
    config = {
        "port": port,
        "issuer": f"https://localhost:{port}",
        "cert": str(certs / "server.pem"),
        "key": str(certs / "server-key.pem"),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": redirect_uri,
        "accounts": ACCOUNTS,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    log = (directory / "provider.log").open("wb")
    process = subprocess.Popen(
        [node, str(NODE_DIR / "oidc-provider.mjs"), str(directory / "config.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=NODE_DIR,
        start_new_session=True,
    )
    provider = Provider(config["issuer"], directory)
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in (directory / "provider.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "provider.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield provider
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


CLIENT_SECRET = secrets.token_urlsafe(24)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sso(
    request: pytest.FixtureRequest,
    launch_server: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, Provider]]:
    """A registry whose people sign on at a real OIDC provider, and that provider."""
    provider_port = _free_port()

    env = {
        "CR_OIDC_ISSUER": f"https://localhost:{provider_port}",
        "CR_OIDC_CLIENT_ID": CLIENT_ID,
        "CR_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "CR_OIDC_SCOPES": "openid profile roles",
        "CR_OIDC_ROLE_CLAIM": "roles",
        "CR_OIDC_CA_FILE": "certs/ca.pem",
        "CR_OIDC_ROLES": "cr-admin=admin,cr-reviewer=reviewer,cr-auditor=auditor",
    }
    server = launch_server(request.param, env=env)
    callback = f"{server.base_url}/auth/oidc/callback"
    directory = tmp_path_factory.mktemp(f"oidc-{request.param}")
    with oidc_provider(directory, provider_port, server.certs_dir, callback) as provider:
        yield server, provider


def _browser(server: Any) -> httpx.Client:
    client: httpx.Client = server.new_client()
    client.follow_redirects = False
    return client


def _sign_on(
    browser: httpx.Client, server: Any, provider: Provider, account: str
) -> httpx.Response:
    """Log in at the registry as ``account`` of the provider; the registry's callback answer."""
    start = browser.get(f"{server.base_url}/auth/oidc/login")
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    assert authorize.startswith(f"{provider.base_url}/auth?"), authorize
    assert "code_challenge_method=S256" in authorize
    step = browser.get(authorize)
    for _ in range(5):
        assert step.status_code in (302, 303), step.text
        location = urljoin(provider.base_url, step.headers["location"])
        if location.startswith(f"{server.base_url}/"):
            return browser.get(location)
        if "/interaction/" in location:
            location += f"?account={account}"
        step = browser.get(location)
    raise AssertionError("the provider never sent the browser back")


def _session_user(server: Any, token: str) -> Any:
    engine = server.engine()
    try:
        return session_user(session_factory(engine), token, timedelta(minutes=30))
    finally:
        engine.dispose()


def _sso_events(server: Any) -> list[AuditEvent]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            query = select(AuditEvent).where(AuditEvent.event_type == "sso-login")
            return [
                AuditEvent(**row._mapping)
                for row in connection.execute(query.order_by(AuditEvent.id))
            ]
    finally:
        engine.dispose()


def _user(server: Any, username: str) -> User | None:
    engine = server.engine()
    try:
        with session_factory(engine)() as session:
            return session.scalar(select(User).where(User.username == username))
    finally:
        engine.dispose()


def test_sign_on_starts_a_browser_session_with_the_mapped_role(sso: tuple[Any, Provider]) -> None:
    server, provider = sso
    with _browser(server) as browser:
        answer = _sign_on(browser, server, provider, "rita")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("cr_session="))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes, cookie
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    person = _session_user(server, token)
    assert person is not None and person.username == "rita.sso"
    assert person.role.value == "reviewer"
    account = _user(server, "rita.sso")
    assert account is not None and account.sso_subject == f"{provider.base_url} rita"
    # made by single sign-on: no password opens it
    login = server.new_client().post(
        "/auth/token", json={"username": "rita.sso", "password": "!sso"}
    )
    assert login.status_code == 401
    event = next(e for e in reversed(_sso_events(server)) if e.agent == "rita.sso")
    assert event.outcome == 0 and event.detail["subject"] == "rita"


def test_the_most_privileged_mapped_role_wins_and_follows_the_provider(
    sso: tuple[Any, Provider],
) -> None:
    server, provider = sso
    with _browser(server) as browser:
        assert _sign_on(browser, server, provider, "ada").status_code == 303
    assert _user(server, "ada.sso").role.value == "admin"  # type: ignore[union-attr]
    with _browser(server) as browser:
        assert _sign_on(browser, server, provider, "moved").status_code == 303
    assert _user(server, "moved.sso").role.value == "auditor"  # type: ignore[union-attr]
    provider.tamper(server.certs_dir / "ca.pem", roles=["cr-reviewer"])
    with _browser(server) as browser:
        assert _sign_on(browser, server, provider, "moved").status_code == 303
    assert _user(server, "moved.sso").role.value == "reviewer"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("account", "tampered", "status", "reason"),
    [
        ("rita", {"aud": "another-client"}, 401, "another audience"),
        ("rita", {"exp": 1_000_000_000, "iat": 999_990_000}, 401, "expired"),
        ("rita", {"nonce": "replayed"}, 401, "nonce"),
        ("rita", {"iss": "https://elsewhere.example.org"}, 401, "iss"),
        ("norole", {}, 403, "no 'roles' claim"),
        ("guest", {}, 403, "cr-guest"),
        ("clash", {}, 409, "local account"),
    ],
)
def test_a_refused_sign_on_starts_no_session_and_is_audited(
    sso: tuple[Any, Provider], account: str, tampered: dict[str, Any], status: int, reason: str
) -> None:
    server, provider = sso
    before = len(_sso_events(server))
    if tampered:
        provider.tamper(server.certs_dir / "ca.pem", **tampered)
    with _browser(server) as browser:
        answer = _sign_on(browser, server, provider, account)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"], answer.text
    assert not any(c.startswith("cr_session=") for c in answer.headers.get_list("set-cookie"))
    new = _sso_events(server)[before:]
    assert [e.outcome for e in new] == [4], new
    assert reason in new[0].detail["reason"]


def test_a_callback_without_this_browsers_login_is_refused(sso: tuple[Any, Provider]) -> None:
    server, _provider = sso
    with _browser(server) as browser:
        answer = browser.get("/auth/oidc/callback", params={"code": "x", "state": "y"})
        assert answer.status_code == 400, answer.text
        assert browser.get("/auth/oidc/login").status_code == 302  # a login now in progress
        forged = browser.get("/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert forged.status_code == 400 and "state" in forged.json()["detail"]
