"""The admin and auth API in process (``TestClient``): roles on every route, login, lockout,
token expiry and logout, and the review workflows over HTTP.

TestClient speaks plain HTTP, which is fine for bearer-token routes. A client certificate is
injected into the ASGI scope (``scope["extensions"]["tls"]["client_cert_chain"]``, where the
real server puts it) by a small wrapper; coverage over real TLS lives with the HTTPS server
tests in this folder.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import func, select, text, update
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from clientregistry.api.app import create_app
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import Installation, init_data_dir
from clientregistry.registry.submit import SubmitResult, Submitter
from clientregistry.security import passwords, users
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import Role
from clientregistry.store.models import SourceRecord, Token

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the suite turns warnings into errors.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from admin_routes import (
    ACCOUNTS,
    PASSWORD,
    ROUTES,
    SYSTEMS,
    Route,
    every_route_and_caller,
    expected_status,
    patient,
)

JOHN = {"birth_date": "1990-05-05", "phone": "0711111111", "gender": "male"}
PETER = {"birth_date": "1971-11-30", "phone": "0755555555", "gender": "male"}


def with_client_certificate(app: ASGIApp, pem: str) -> ASGIApp:
    """``app`` as the TLS server hands it a request with a client certificate."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = dict(scope)
            scope["extensions"] = {
                **scope.get("extensions", {}),
                "tls": {"client_cert_chain": [pem]},
            }
        await app(scope, receive, send)

    return wrapped


@dataclass
class Api:
    installation: Installation
    context: RegistryContext
    client: TestClient
    cert_client: TestClient
    """Every request carries the openmrs client certificate (and nothing else unless given)."""

    def token(self, username: str, password: str | None = None) -> str:
        password = password or (
            self.installation.admin_password if username == "admin" else PASSWORD
        )
        response = self.client.post(
            "/auth/token", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def submit(self, system: str, resource: dict[str, Any]) -> SubmitResult:
        with transaction(self.context.sessions) as session:
            client = self.context.settings.systems[system]
            return Submitter(self.context).submit(session, resource, client)

    def golden(self, record_id: str) -> str | None:
        with transaction(self.context.sessions, write=False) as session:
            record = session.get(SourceRecord, record_id)
            assert record is not None
            return record.golden_id


def _make_api(data_dir: Path, url: str = "") -> Api:
    installation = init_data_dir(data_dir, hostnames=[], database_url=url)
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    app = create_app(context)  # create_app mounts /auth and /admin itself
    with transaction(context.sessions) as session:
        users.add_user(session, "rita", PASSWORD, Role.REVIEWER)
        users.add_user(session, "otto", PASSWORD, Role.AUDITOR)
        users.add_user(session, "dave", PASSWORD, Role.REVIEWER)
    pem = installation.clients[0].cert_path.read_text(encoding="ascii")
    return Api(
        installation,
        context,
        TestClient(app),
        TestClient(with_client_certificate(app, pem)),
    )


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One registry for the read-mostly role matrix."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        api = _make_api(tmp_path_factory.mktemp("admin") / "data")
        yield api
    api.context.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[Api]:
    """A registry of its own (workflows, lockout), on SQLite and on PostgreSQL."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    with fresh_database(request.param) as url:
        api = _make_api(tmp_path / "data", url)
        yield api
        api.context.close()


# ----------------------------------------------------------------------------- roles


@every_route_and_caller
def test_every_route_checks_the_role(shared_api: Api, caller: str, route: Route) -> None:
    headers: dict[str, str] = {}
    if caller in ACCOUNTS:
        headers = shared_api.headers(ACCOUNTS[caller])
    # All but "nobody" come with the openmrs client certificate: it must grant nothing, and
    # must not get in the way of a valid token either.
    client = shared_api.client if caller == "nobody" else shared_api.cert_client
    response = client.request(route.method, route.path, json=route.body, headers=headers)
    assert response.status_code == expected_status(caller, route), response.text
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/json"


def api_routes(routes: Any) -> list[APIRoute]:
    """Every APIRoute, those of included routers too (FastAPI keeps them nested)."""
    out: list[APIRoute] = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            out += api_routes(nested.routes)
        elif isinstance(route, APIRoute):
            out.append(route)
    return out


def test_the_matrix_covers_every_admin_and_auth_route(shared_api: Api) -> None:
    app = shared_api.client.app
    assert isinstance(app, FastAPI)
    routes = api_routes(app.routes)
    assert any(route.path == "/admin/people" for route in routes)  # the walk finds them
    for route in routes:
        if route.path == "/auth/token":
            continue
        if not route.path.startswith(("/admin", "/auth")):
            continue
        for method in route.methods:
            scope = {"type": "http", "path": "", "method": method}
            covered = any(
                route.matches({**scope, "path": path})[0] is Match.FULL
                for verb, path, *_ in ROUTES
                if verb == method
            )
            assert covered, f"{method} {route.path} is missing from ROUTES"


def test_the_client_certificate_is_real(shared_api: Api) -> None:
    """The injected certificate does authenticate on the FHIR API (so the 401s above are the
    admin routes refusing it, not a broken certificate)."""
    response = shared_api.cert_client.get("/fhir/Patient/no-such-record")
    assert response.status_code == 404
    assert shared_api.client.get("/fhir/Patient/no-such-record").status_code == 401


def test_a_bad_token_is_refused_and_audited(shared_api: Api) -> None:
    for value in ("Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer "):
        response = shared_api.client.get("/admin/queues", headers={"Authorization": value})
        assert response.status_code == 401
    audit = shared_api.client.get(
        "/admin/audit", params={"event_type": "token-refused"}, headers=shared_api.headers("otto")
    )
    assert audit.json()["total"] >= 1


# ----------------------------------------------------------------------------- login


def test_login_accepts_json_and_forms(api: Api) -> None:
    form = api.client.post(
        "/auth/token",
        data={"username": "rita", "password": PASSWORD, "grant_type": "password"},
    )
    assert form.status_code == 200, form.text
    body = form.json()
    assert body["token_type"] == "bearer" and body["role"] == "reviewer"
    assert 3500 <= body["expires_in"] <= 3600
    me = api.client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["username"] == "rita"
    for kwargs, status in [
        ({"content": b"username=rita", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {"username": "rita"}}, 400),
        ({"json": ["rita", PASSWORD]}, 400),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": {"username": "rita", "password": "wrong password!"}}, 401),
        ({"json": {"username": "nobody", "password": "wrong password!"}}, 401),
    ]:
        response = api.client.post("/auth/token", **kwargs)
        assert response.status_code == status, (kwargs, response.text)


def test_repeated_failures_slow_down_the_address_not_the_person(api: Api) -> None:
    """Sign-in throttling (security/tokens.py): five failures from an address make it wait
    30 s (429, Retry-After), whatever the username; the person signs in from the address they
    used before, and an address the account never used waits a minute at most."""
    right = {"username": "rita", "password": PASSWORD}
    home = TestClient(api.client.app, client=("198.51.100.20", 40000))
    assert home.post("/auth/token", json=right).status_code == 200
    wrong = {"username": "rita", "password": "wrong password!"}
    for _ in range(5):
        assert api.client.post("/auth/token", json=wrong).status_code == 401
    locked = api.client.post("/auth/token", json=right)
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 30
    # The same address waits for other usernames too ...
    otto = {"username": "otto", "password": PASSWORD}
    assert api.client.post("/auth/token", json=otto).status_code == 429
    # ... but rita gets in from home, and otto (never attacked) from anywhere else.
    assert home.post("/auth/token", json=right).status_code == 200
    other = TestClient(api.client.app, client=("203.0.113.9", 40000))
    signed_in = other.post("/auth/token", json=otto)
    assert signed_in.status_code == 200
    auditor = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    trail = other.get("/admin/audit", params={"agent": "rita", "limit": 200}, headers=auditor)
    kinds = [(e["event_type"], e["outcome"]) for e in trail.json()["items"]]
    assert kinds.count(("login", 4)) == 5 and kinds.count(("login-locked", 4)) == 1
    assert kinds.count(("login", 0)) == 2


def test_tokens_expire_and_logout_revokes(api: Api) -> None:
    token = api.token("rita")
    auth = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/admin/queues", headers=auth).status_code == 200
    with transaction(api.context.sessions) as session:
        session.execute(update(Token).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = api.client.get("/admin/queues", headers=auth)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    token = api.token("rita")
    auth = {"Authorization": f"Bearer {token}"}
    assert api.client.post("/auth/logout", headers=auth).status_code == 204
    assert api.client.get("/admin/queues", headers=auth).status_code == 401
    assert api.client.post("/auth/logout", headers=auth).status_code == 401


def test_disabling_an_account_ends_its_sessions(api: Api) -> None:
    rita = {"Authorization": f"Bearer {api.token('rita')}"}
    admin_headers = api.headers("admin")
    change = api.client.patch("/admin/users/rita", json={"disabled": True}, headers=admin_headers)
    assert change.status_code == 200 and change.json()["disabled"]
    assert api.client.get("/admin/queues", headers=rita).status_code == 401
    refused = api.client.post("/auth/token", json={"username": "rita", "password": PASSWORD})
    assert refused.status_code == 401


def test_users_api(api: Api) -> None:
    headers = api.headers("admin")
    new = {"username": "carol", "password": PASSWORD, "role": "auditor"}
    assert api.client.post("/admin/users", json=new, headers=headers).status_code == 201
    assert api.client.post("/admin/users", json=new, headers=headers).status_code == 409
    short = {**new, "username": "dan", "password": "short"}
    assert api.client.post("/admin/users", json=short, headers=headers).status_code == 400
    last = api.client.patch("/admin/users/admin", json={"role": "auditor"}, headers=headers)
    assert last.status_code == 400 and "last enabled admin" in last.json()["detail"]
    assert api.client.patch("/admin/users/zed", json={}, headers=headers).status_code == 404
    promoted = api.client.patch("/admin/users/carol", json={"role": "admin"}, headers=headers)
    assert promoted.json()["role"] == "admin"
    listed = api.client.get("/admin/users", headers=headers).json()
    assert {u["username"]: u["role"] for u in listed}["carol"] == "admin"
    assert all("password" not in str(u) for u in listed)
    config = api.client.get("/admin/config", headers=headers).json()
    assert config["token_minutes"] == 60 and config["rule_sets"][0]["name"] == "default"
    assert {s["name"] for s in config["systems"]} == {"openmrs", "dhis2", "lims"}


# ----------------------------------------------------------------------------- workflows


def test_break_over_http_keeps_records_apart_and_reverts(api: Api) -> None:
    a = api.submit("openmrs", patient("openmrs", "1", "Aisha", "Nakato"))
    b = api.submit("dhis2", patient("dhis2", "2", "Aisha", "Nakatto"))
    assert a.golden_id == b.golden_id
    headers = api.headers("rita")

    auto = api.client.get("/admin/queues/auto", headers=headers).json()
    assert [i["record"]["id"] for i in auto["items"]] == [b.record_id]
    assert api.client.get("/admin/queues/potential", headers=headers).json()["total"] == 0
    view = api.client.get(f"/admin/records/{b.record_id}", headers=headers).json()
    assert view["golden"]["id"] == a.golden_id
    assert [r["id"] for r in view["linked"]] == [a.record_id]
    (candidate,) = view["candidates"]
    assert candidate["decision"] == "auto" and candidate["explanation"][0]["fields"]

    broke = api.client.post(f"/admin/records/{b.record_id}/break", headers=headers)
    assert broke.status_code == 200, broke.text
    event_id = broke.json()["audit_event_id"]
    # Both updated to match better than before: they stay apart.
    api.submit("dhis2", patient("dhis2", "2", "Aisha", "Nakato"))
    api.submit("openmrs", patient("openmrs", "1", "Aisha", "Nakato"))
    assert api.golden(a.record_id) != api.golden(b.record_id)
    view = api.client.get(f"/admin/records/{b.record_id}", headers=headers).json()
    assert [r["id"] for r in view["broken_with"]] == [a.record_id]
    assert view["candidates"][0]["broken"] and view["candidates"][0]["role"] == "broken"

    # The break is undone from its audit event; the audit trail says who did what.
    reverted = api.client.post(f"/admin/audit/{event_id}/revert", headers=headers)
    assert reverted.status_code == 200, reverted.text
    assert api.golden(b.record_id) == a.golden_id
    again = api.client.post(f"/admin/audit/{event_id}/revert", headers=headers)
    assert again.status_code == 409
    trail = api.client.get(
        "/admin/audit", params={"agent": "rita"}, headers=api.headers("otto")
    ).json()
    by_type = {e["event_type"]: e for e in trail["items"]}
    assert by_type["break"]["detail"]["golden_before"] == a.golden_id
    assert by_type["break"]["revertible"] and by_type["break"]["entity"] == f"Patient/{b.record_id}"
    assert by_type["revert"]["detail"]["reverts"] == event_id
    one = api.client.get(f"/admin/audit/{event_id}", headers=api.headers("otto")).json()
    assert one["resource"]["resourceType"] == "AuditEvent"


def test_join_and_conflict_over_http(api: Api) -> None:
    a = api.submit("openmrs", patient("openmrs", "1", "Aisha", "Nakato"))
    j = api.submit("lims", patient("lims", "5", "John", "Okello", **JOHN))
    x = api.submit("dhis2", patient("dhis2", "9", "Peter", "Mukasa", **PETER))
    headers = api.headers("rita")
    joined = api.client.post(
        f"/admin/records/{x.record_id}/join", json={"record_id": j.record_id}, headers=headers
    )
    assert joined.status_code == 200, joined.text
    assert joined.json()["golden_id"] == j.golden_id
    # x now looks like Aisha: the join stays, a conflict goes to the queue.
    api.submit("dhis2", patient("dhis2", "9", "Aisha", "Nakato"))
    assert api.golden(x.record_id) == j.golden_id
    counts = api.client.get("/admin/queues", headers=headers).json()
    assert counts["conflict"] == 1 and counts["potential"] == 0
    (item,) = api.client.get("/admin/queues/conflict", headers=headers).json()["items"]
    assert item["record"]["id"] == x.record_id and item["other"]["id"] == a.record_id
    assert api.client.get("/admin/queues/potential", headers=headers).json()["items"] == []

    resolved = api.client.post(
        f"/admin/issues/{item['id']}/resolve", json={"resolution": "move"}, headers=headers
    )
    assert resolved.status_code == 200, resolved.text
    assert api.golden(x.record_id) == a.golden_id
    assert api.client.get("/admin/queues", headers=headers).json()["conflict"] == 0
    issue = api.client.get(f"/admin/issues/{item['id']}", headers=headers).json()
    assert issue["status"] == "resolved" and issue["resolved_by"] == "rita"
    bad = api.client.post(
        f"/admin/issues/{item['id']}/resolve", json={"resolution": "maybe"}, headers=headers
    )
    assert bad.status_code == 400


def test_dry_run_explains_and_stores_nothing(api: Api) -> None:
    a = api.submit("openmrs", patient("openmrs", "1", "Aisha", "Nakato"))
    headers = api.headers("rita")
    response = api.client.post(
        "/admin/match/dry-run",
        content=b'{"resourceType": "Patient", "name": [{"family": "Nakato", "given": ["Aisha"]}],'
        b' "gender": "female", "birthDate": "1984-01-12",'
        b' "telecom": [{"system": "phone", "value": "0772410233"}]}',
        headers={**headers, "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["action"] == "create" and result["status"] == "auto"
    assert result["golden_id"] == a.golden_id and not result["new_golden"]
    assert result["candidates"][0]["record"]["id"] == a.record_id
    assert result["candidates"][0]["explanation"][0]["fields"]
    with transaction(api.context.sessions, write=False) as session:
        assert session.scalar(select(func.count()).select_from(SourceRecord)) == 1
    invalid = api.client.post(
        "/admin/match/dry-run", json={"resourceType": "Observation"}, headers=headers
    )
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == "application/json"  # the admin API's format
    assert "Patient" in invalid.json()["detail"]


def test_queues_page(api: Api) -> None:
    for n, given in enumerate(["Aisha", "Aisha", "Aysha", "Aisha"]):
        api.submit(list(SYSTEMS)[n % 3], patient(list(SYSTEMS)[n % 3], str(n), given, "Nakato"))
    headers = api.headers("rita")
    page = api.client.get("/admin/queues/auto", params={"offset": 1, "limit": 1}, headers=headers)
    body = page.json()
    assert body["total"] == 3 and body["offset"] == 1 and len(body["items"]) == 1
    assert body["items"][0]["members"] == 4
    over = api.client.get("/admin/queues/auto", params={"limit": 1000}, headers=headers)
    assert over.status_code == 400
    unknown = api.client.get("/admin/queues/everything", headers=headers)
    assert unknown.status_code == 400


def test_the_openapi_schema_documents_the_admin_api(shared_api: Api) -> None:
    schema = shared_api.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/auth/token",
        "/auth/logout",
        "/admin/queues/{kind}",
        "/admin/records/{record_id}",
        "/admin/records/{record_id}/break",
        "/admin/issues/{issue_id}/resolve",
        "/admin/match/dry-run",
        "/admin/audit/{event_id}/revert",
    ):
        assert path in paths, path
    components = schema["components"]
    for model in ("RecordView", "DryRun", "ActionResult", "IssuePage", "AutoPage", "AuditPage"):
        assert model in components["schemas"], model
    assert components["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    token_body = paths["/auth/token"]["post"]["requestBody"]["content"]
    assert set(token_body) == {"application/json", "application/x-www-form-urlencoded"}


def test_reviewers_search_demographics_and_auditors_do_not(api: Api) -> None:
    """Reviewers (and admins) search demographics with their token (issue: 'search
    demographics'); auditors and certificate holders without read-demographics may not."""
    api.submit("openmrs", patient("openmrs", "s-1", "Grace", "Achieng", birth_date="1995-02-14"))
    query = "/fhir/Patient?family=achieng&birthdate=1995-02-14"
    found = api.client.get(query, headers=api.headers("rita"))
    assert found.status_code == 200, found.text
    bundle = found.json()
    assert bundle["resourceType"] == "Bundle"
    names = [e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])]
    assert names == ["Achieng"]
    assert api.client.get(query, headers=api.headers("admin")).status_code == 200
    assert api.client.get(query, headers=api.headers("otto")).status_code == 403
    assert api.cert_client.get(query).status_code == 403  # openmrs: no read-demographics


# ----------------------------------------------------------------------------- audit chain


def test_an_auditor_verifies_and_exports_the_trail(api: Api) -> None:
    api.submit("openmrs", patient("openmrs", "om-chain", "Aisha", "Nakato"))
    otto = api.headers("otto")
    check = api.client.get("/admin/audit/verify", headers=otto)
    assert check.status_code == 200, check.text
    assert check.json()["ok"] is True and check.json()["checked"] >= 1
    today = datetime.now(UTC).date().isoformat()
    export = api.client.get(
        "/admin/audit/export", params={"from": today, "to": today}, headers=otto
    )
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("application/x-ndjson")
    resources = [json.loads(line) for line in export.text.splitlines()]
    assert resources and all(r["resourceType"] == "AuditEvent" for r in resources)
    assert any(r["subtype"][-1].get("code") == "ITI-104" for r in resources)
    as_csv = api.client.get(
        "/admin/audit/export", params={"from": today, "to": today, "format": "csv"}, headers=otto
    )
    assert as_csv.status_code == 200 and as_csv.text.startswith("id,chain_seq,chain_hash")
    for params in ({"from": "yesterday", "to": today}, {"from": today, "to": "2000-01-01"}):
        refused = api.client.get("/admin/audit/export", params=params, headers=otto)
        assert refused.status_code == 400 and "detail" in refused.json()
    with transaction(api.context.sessions) as session:
        session.execute(text("UPDATE audit_event SET agent = 'mallory' WHERE chain_seq = 1"))
    broken = api.client.get("/admin/audit/verify", headers=otto).json()
    assert broken["ok"] is False and broken["broken_seq"] == 1 and broken["broken_event"]
