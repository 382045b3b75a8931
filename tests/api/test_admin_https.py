"""The admin API over real HTTPS (``clientregistry serve``): real TLS, real client
certificates, real bearer tokens from ``POST /auth/token``.

``test_admin.py`` covers the same ground in process, with the certificate injected into the
ASGI scope; here the route × caller table (shared, ``admin_routes.py``) runs against the
served registry, and so do the review workflows: break, join and a conflict, each followed by
updates over the FHIR API. The accounts are made on the shared server once per module: an
admin with the CLI (``users add``, password on standard input; init's admin password is
printed once and not kept), the others by that admin through ``POST /admin/users``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_routes import PASSWORD, ROUTES, Route, every_route_and_caller, expected_status

ADMIN = "ada"
ACCOUNTS = {"reviewer": "rita", "auditor": "otto", "admin": ADMIN}
"""Role → account; ``dave`` (a reviewer) is made too, for the table's PATCH row."""


def _cli() -> Path:
    beside = Path(sys.executable).with_name("clientregistry")
    if beside.exists():
        return beside
    return Path(__file__).resolve().parents[2] / ".venv" / "bin" / "clientregistry"


@dataclass
class Accounts:
    """The module's accounts on one server, a token for each role and clients to use them."""

    server: Any
    tokens: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    def login(self, username: str) -> str:
        response = self.server.new_client().post(
            "/auth/token", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "bearer", body
        return str(body["access_token"])

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def client(self, role: str) -> httpx.Client:
        """A client without a certificate that carries ``role``'s token."""
        if role not in self._clients:
            client = self.server.new_client()
            client.headers.update(self.bearer(self.tokens[role]))
            self._clients[role] = client
        return self._clients[role]

    def golden(self, record_id: str) -> str:
        """The record's golden record, as the admin API shows it to a reviewer."""
        response = self.client("reviewer").get(f"/admin/records/{record_id}")
        assert response.status_code == 200, response.text
        golden = response.json()["golden"]
        assert golden is not None, response.text
        return str(golden["id"])


@pytest.fixture(scope="module")
def accounts(registry_server: Any) -> Iterator[Accounts]:
    server = registry_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    made = subprocess.run(
        [str(_cli()), "users", "add", ADMIN, "--role", "admin", "--data-dir", str(server.data_dir)],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)
    found = Accounts(server)
    found.tokens["admin"] = found.login(ADMIN)
    admin = found.client("admin")
    for username, role in (("rita", "reviewer"), ("otto", "auditor"), ("dave", "reviewer")):
        body = {"username": username, "password": PASSWORD, "role": role}
        response = admin.post("/admin/users", json=body)
        assert response.status_code == 201, response.text
    for role in ("reviewer", "auditor"):
        found.tokens[role] = found.login(ACCOUNTS[role])
    yield found


# ----------------------------------------------------------------------------- roles


@every_route_and_caller
def test_every_route_checks_the_role_over_https(
    registry_server: Any, accounts: Accounts, caller: str, route: Route
) -> None:
    headers: dict[str, str] = {}
    if caller in ACCOUNTS:
        # Logging out ends the token: that row gets one of its own.
        token = accounts.tokens[caller]
        if route.path == "/auth/logout":
            token = accounts.login(ACCOUNTS[caller])
        headers = accounts.bearer(token)
    # All but "nobody" present the openmrs client certificate in the TLS handshake: it must
    # grant nothing here, and must not get in the way of a valid token either.
    if caller == "nobody":
        client = registry_server.new_client()
    else:
        client = registry_server.client("openmrs")
    response = client.request(route.method, route.path, json=route.body, headers=headers)
    assert response.status_code == expected_status(caller, route), response.text
    if response.status_code != 204:
        assert response.headers["content-type"] == "application/json", response.headers
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if response.status_code in (401, 403):
        assert response.json()["detail"], response.text


def test_the_table_covers_every_route_the_server_serves(registry_server: Any) -> None:
    """Every ``/admin`` and ``/auth`` operation in the running server's OpenAPI document has
    a row (so a route added later cannot escape the HTTPS matrix either)."""
    schema = registry_server.client("openmrs").get("/openapi.json")
    assert schema.status_code == 200, schema.text
    operations = [
        (method.upper(), path)
        for path, item in schema.json()["paths"].items()
        if path.startswith(("/admin", "/auth")) and path != "/auth/token"
        for method in item
    ]
    assert len(operations) >= 15, operations
    for method, path in operations:
        pattern = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")
        rows = [r for r in ROUTES if r.method == method and pattern.match(r.path)]
        assert rows, f"{method} {path} is missing from ROUTES"


def test_the_certificate_and_the_tokens_are_real(
    registry_server: Any, accounts: Accounts, fhir: Any
) -> None:
    """The controls of the matrix: the openmrs certificate does get into the FHIR API (so its
    401s above are the admin routes refusing it), each token names its account, and a
    made-up token is refused."""
    fhir.outcome(registry_server.client("openmrs").get("/fhir/Patient/no-such"), 404)
    fhir.outcome(registry_server.new_client().get("/fhir/Patient/no-such"), 401)
    for role, username in ACCOUNTS.items():
        me = accounts.client(role).get("/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["username"] == username and me.json()["role"] == role
    refused = registry_server.new_client().get(
        "/admin/queues", headers={"Authorization": "Bearer not-a-token"}
    )
    assert refused.status_code == 401


# ----------------------------------------------------------------------------- workflows


def misspelled(person: dict[str, Any]) -> dict[str, Any]:
    """``person`` with one letter of the family name doubled (still the same person)."""
    name = dict(person["name"][0])
    family = name["family"]
    name["family"] = family[:4] + family[3] + family[4:]
    return {**person, "name": [name]}


def submitted(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    location, cruid = response.headers["Location"], response.headers["LocationCRUID"]
    return location.removeprefix("Patient/"), cruid.removeprefix("Patient/")


def conflicts_of(reviewer: httpx.Client, record_id: str) -> list[dict[str, Any]]:
    """Open conflict items of ``record_id`` in the conflict queue."""
    page = reviewer.get("/admin/queues/conflict", params={"limit": 200})
    assert page.status_code == 200, page.text
    assert page.json()["total"] <= 200, "the queue outgrew one page"
    items = page.json()["items"]
    return [i for i in items if record_id in (i["record"]["id"], i["other"]["id"])]


def test_break_keeps_records_apart_through_better_matching_updates_and_reverts(
    registry_server: Any, accounts: Accounts, fhir: Any
) -> None:
    server, reviewer = registry_server, accounts.client("reviewer")
    person = fhir.person()
    va, vb = fhir.token("a-"), fhir.token("b-")
    a_id, golden = submitted(server.submit("openmrs", fhir.patient("openmrs", va, person)), 201)
    b_id, b_golden = submitted(
        server.submit("dhis2", fhir.patient("dhis2", vb, misspelled(person))), 201
    )
    assert b_golden == golden
    view = reviewer.get(f"/admin/records/{b_id}").json()
    assert view["golden"]["id"] == golden
    assert [r["id"] for r in view["linked"]] == [a_id]
    assert view["candidates"][0]["decision"] == "auto"

    broke = reviewer.post(f"/admin/records/{b_id}/break")
    assert broke.status_code == 200, broke.text
    event_id = broke.json()["audit_event_id"]
    assert broke.json()["golden_id"] not in (None, golden)

    # Both updated to the very same demographics (a better match than before): they stay
    # apart, as the FHIR API's answers and the admin API both say.
    b_id2, b_after = submitted(server.submit("dhis2", fhir.patient("dhis2", vb, person)), 200)
    a_id2, a_after = submitted(server.submit("openmrs", fhir.patient("openmrs", va, person)), 200)
    assert (a_id2, b_id2) == (a_id, b_id)
    assert a_after != b_after
    assert accounts.golden(a_id) == a_after and accounts.golden(b_id) == b_after
    view = reviewer.get(f"/admin/records/{b_id}").json()
    assert [r["id"] for r in view["broken_with"]] == [a_id]
    assert view["linked"] == []
    assert view["candidates"][0]["broken"] and view["candidates"][0]["role"] == "broken"

    # The break is undone from its audit event, once.
    reverted = reviewer.post(f"/admin/audit/{event_id}/revert")
    assert reverted.status_code == 200, reverted.text
    assert accounts.golden(b_id) == accounts.golden(a_id) == golden
    assert reviewer.post(f"/admin/audit/{event_id}/revert").status_code == 409
    trail = accounts.client("auditor").get(
        "/admin/audit", params={"entity": f"Patient/{b_id}", "agent": "rita"}
    )
    assert trail.status_code == 200, trail.text
    by_type = {e["event_type"]: e for e in trail.json()["items"]}
    assert by_type["break"]["detail"]["golden_before"] == golden
    assert by_type["break"]["source_address"] == "127.0.0.1"


def test_join_stays_through_an_update_that_matches_someone_else(
    registry_server: Any, accounts: Accounts, fhir: Any
) -> None:
    server, reviewer = registry_server, accounts.client("reviewer")
    someone = fhir.person()
    a = server.submit("openmrs", fhir.patient("openmrs", None, someone))
    a_id, a_golden = submitted(a, 201)
    j_id, j_golden = submitted(server.submit("lims", fhir.patient("lims")), 201)
    vx = fhir.token("x-")
    x_id, x_golden = submitted(server.submit("dhis2", fhir.patient("dhis2", vx)), 201)
    assert len({a_golden, j_golden, x_golden}) == 3

    joined = reviewer.post(f"/admin/records/{x_id}/join", json={"record_id": j_id})
    assert joined.status_code == 200, joined.text
    assert joined.json()["golden_id"] == j_golden
    assert accounts.golden(x_id) == j_golden

    # x is updated to look exactly like the person of a: the join stays (a person decided),
    # and the disagreement waits in the conflict queue.
    _, x_after = submitted(server.submit("dhis2", fhir.patient("dhis2", vx, someone)), 200)
    assert x_after == j_golden
    assert accounts.golden(x_id) == j_golden
    (item,) = conflicts_of(reviewer, x_id)
    assert item["record"]["id"] == x_id and item["other"]["id"] == a_id
    assert item["kind"] == "conflict" and item["status"] == "open"

    # The reviewer keeps the join: the item leaves the queue and x stays where it was put,
    # also through a further update.
    kept = reviewer.post(f"/admin/issues/{item['id']}/resolve", json={"resolution": "keep"})
    assert kept.status_code == 200, kept.text
    assert conflicts_of(reviewer, x_id) == []
    _, x_again = submitted(server.submit("dhis2", fhir.patient("dhis2", vx, someone)), 200)
    assert x_again == j_golden == accounts.golden(x_id)
    assert accounts.golden(a_id) == a_golden


def test_a_conflict_between_two_golden_records_is_resolved_from_the_queue(
    registry_server: Any, accounts: Accounts, fhir: Any
) -> None:
    """Two golden records of one person (a break kept them apart) and a third record that
    matches both: it joins one, the other becomes a conflict; moving it settles the item."""
    server, reviewer = registry_server, accounts.client("reviewer")
    person = fhir.person()
    a_id, golden = submitted(server.submit("openmrs", fhir.patient("openmrs", None, person)), 201)
    b_id, _ = submitted(server.submit("dhis2", fhir.patient("dhis2", None, person)), 201)
    broke = reviewer.post(f"/admin/records/{b_id}/break")
    assert broke.status_code == 200, broke.text
    b_golden = broke.json()["golden_id"]
    assert b_golden != golden == accounts.golden(a_id)
    before = reviewer.get("/admin/queues").json()["conflict"]

    c_id, c_golden = submitted(server.submit("lims", fhir.patient("lims", None, person)), 201)
    assert c_golden in (golden, b_golden)
    other_golden = b_golden if c_golden == golden else golden
    (item,) = conflicts_of(reviewer, c_id)
    assert item["record"]["id"] == c_id and item["other"]["golden_id"] == other_golden
    assert reviewer.get("/admin/queues").json()["conflict"] == before + 1
    view = reviewer.get(f"/admin/records/{c_id}").json()
    assert view["record"]["match_status"] == "conflict"
    assert [i["id"] for i in view["issues"]] == [item["id"]]

    resolved = reviewer.post(f"/admin/issues/{item['id']}/resolve", json={"resolution": "move"})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["golden_id"] == other_golden
    assert accounts.golden(c_id) == other_golden
    assert conflicts_of(reviewer, c_id) == []
    assert reviewer.get("/admin/queues").json()["conflict"] == before
    issue = reviewer.get(f"/admin/issues/{item['id']}").json()
    assert issue["status"] == "resolved" and issue["resolved_by"] == "rita"
    again = reviewer.post(f"/admin/issues/{item['id']}/resolve", json={"resolution": "keep"})
    assert again.status_code == 409
    # The break still holds: a and b stay apart.
    assert accounts.golden(a_id) != accounts.golden(b_id)
