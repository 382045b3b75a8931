"""The admin and auth API's routes and who may call them, shared by the in-process tests
(``test_admin.py``) and the HTTPS tests (``test_admin_https.py``).

``ROUTES`` lists every ``/admin`` and ``/auth`` route but ``POST /auth/token`` (the in-process
module checks that none is missing) with the roles allowed and the status an allowed caller
gets; ``expected_status`` gives any caller's. The table names accounts ``dave`` (reviewer,
changed by the PATCH row) and ``carol`` (created by the POST row): the callers' registry has
``dave`` and not ``carol``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import pytest

PASSWORD = "reviewer password 1"
SYSTEMS = {
    "openmrs": "http://clientregistry.org/openmrs",
    "dhis2": "http://clientregistry.org/dhis2",
    "lims": "http://clientregistry.org/lims",
}


def patient(system: str, value: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEMS[system], "value": value}],
        "name": [{"family": family, "given": [given]}],
        "gender": extra.get("gender", "female"),
        "birthDate": extra.get("birth_date", "1984-01-12"),
        "telecom": [{"system": "phone", "value": extra.get("phone", "0772410233")}],
    }
    return resource


UPLOAD = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [{"resource": patient("openmrs", f"upload-{uuid.uuid4()}", "Ruth", "Akello")}],
}
"""A file to import (a Bundle of one Patient, new in each test session)."""

REVIEW = {"reviewer", "admin"}
AUDIT = {"auditor", "admin"}
ADMIN = {"admin"}
ANYONE = {"reviewer", "auditor", "admin"}
CALLERS = ("nobody", "certificate", "reviewer", "auditor", "admin")
ACCOUNTS = {"reviewer": "rita", "auditor": "otto", "admin": "admin"}


class Route(NamedTuple):
    method: str
    path: str
    body: Any
    """The JSON body, if any."""
    allowed: set[str]
    """The roles allowed."""
    status: int
    """What an allowed caller gets."""


ROUTES: list[Route] = [
    Route("GET", "/auth/me", None, ANYONE, 200),
    Route("PATCH", "/auth/me", {"language": None}, ANYONE, 200),
    Route(
        "POST",
        "/auth/me/password",
        {"current_password": "not it", "new_password": "a new password 1"},
        ANYONE,
        400,
    ),
    Route("POST", "/auth/logout", None, ANYONE, 204),
    Route("GET", "/admin/queues", None, REVIEW, 200),
    Route("GET", "/admin/queues/auto", None, REVIEW, 200),
    Route("GET", "/admin/queues/potential", None, REVIEW, 200),
    Route("GET", "/admin/queues/conflict", None, REVIEW, 200),
    Route("GET", "/admin/issues/999", None, REVIEW, 404),
    Route("POST", "/admin/issues/999/resolve", {"resolution": "keep"}, REVIEW, 404),
    Route("GET", "/admin/records/no-such-record", None, REVIEW, 404),
    Route("POST", "/admin/records/no-such-record/break", None, REVIEW, 404),
    Route("POST", "/admin/records/no-such-record/unbreak", None, REVIEW, 404),
    Route("POST", "/admin/records/no-such-record/join", {"golden_id": "x"}, REVIEW, 404),
    Route("POST", "/admin/records/no-such-record/confirm", None, REVIEW, 404),
    Route("GET", "/admin/people", None, REVIEW, 200),
    Route("GET", "/admin/people/no-such-person", None, REVIEW, 404),
    Route("GET", "/admin/records/no-such-record/versions/1", None, REVIEW, 404),
    Route("GET", "/admin/statistics", None, ANYONE, 200),
    Route("GET", "/admin/rules", None, REVIEW, 200),
    Route(
        "POST",
        "/admin/rules/test",
        {
            "left": patient("lims", "1", "Aisha", "Nakato"),
            "right": patient("dhis2", "2", "Aysha", "Nakato"),
        },
        REVIEW,
        200,
    ),
    Route("POST", "/admin/match/dry-run", patient("lims", "1", "Aisha", "Nakato"), REVIEW, 200),
    Route("POST", "/admin/audit/999999/revert", None, REVIEW, 404),
    Route("GET", "/admin/audit", None, AUDIT, 200),
    Route("GET", "/admin/audit/verify", None, AUDIT, 200),
    Route("GET", "/admin/audit/export", None, AUDIT, 400),  # (no range given)
    Route("GET", "/admin/audit/1", None, AUDIT, 200),
    Route("GET", "/admin/users", None, ADMIN, 200),
    Route(
        "POST",
        "/admin/users",
        {"username": "carol", "password": PASSWORD, "role": "auditor"},
        ADMIN,
        201,
    ),
    Route("PATCH", "/admin/users/dave", {"role": "reviewer"}, ADMIN, 200),
    Route("GET", "/admin/config", None, ADMIN, 200),
    Route("POST", "/admin/imports", UPLOAD, ADMIN, 202),
    Route("GET", "/admin/imports", None, ADMIN, 200),
    Route("GET", "/admin/imports/999999", None, ADMIN, 404),
    Route("GET", "/admin/imports/999999/report", None, ADMIN, 404),
    Route("GET", "/admin/imports/999999/rows", None, ADMIN, 404),
    Route("POST", "/admin/imports/999999/cancel", None, ADMIN, 404),
    Route("POST", "/admin/rules/check", {"rules": []}, ADMIN, 200),
    Route("POST", "/admin/rules/versions", {"rules": []}, ADMIN, 400),
    Route("GET", "/admin/rules/versions", None, ADMIN, 200),
    Route("GET", "/admin/rules/versions/999999", None, ADMIN, 404),
    Route("POST", "/admin/rules/versions/999999/dry-run", None, ADMIN, 404),
    Route("POST", "/admin/rules/versions/999999/activate", None, ADMIN, 404),
    Route("POST", "/admin/rules/restore", None, ADMIN, 409),
    Route("GET", "/admin/rematches", None, ADMIN, 200),
    Route("GET", "/admin/rematches/999999", None, ADMIN, 404),
    Route("GET", "/admin/rematches/999999/report", None, ADMIN, 404),
    Route("POST", "/admin/rematches/999999/cancel", None, ADMIN, 404),
]


def expected_status(caller: str, route: Route) -> int:
    """What ``caller`` gets from ``route``: 401 without a token, 403 in the wrong role."""
    if caller in ("nobody", "certificate"):
        return 401
    return route.status if caller in route.allowed else 403


_Test = TypeVar("_Test", bound=Callable[..., None])


def every_route_and_caller(test: _Test) -> _Test:
    """Run ``test`` for every route (argument ``route``) and caller (argument ``caller``)."""
    ids = [f"{route.method} {route.path}" for route in ROUTES]
    marked = pytest.mark.parametrize("route", ROUTES, ids=ids)(test)
    return cast(_Test, pytest.mark.parametrize("caller", CALLERS)(marked))
