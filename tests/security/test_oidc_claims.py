"""The pure parts of single sign-on: role mapping, claim paths, the browser's login flow.
(The protocol against a real provider: tests/api/test_oidc.py.)"""

from __future__ import annotations

import pytest

from clientregistry.security.oidc import LoginFlow, OidcRefused, claim_at, registry_role
from clientregistry.security.oidc_settings import OidcSettings

KEYCLOAK = OidcSettings(
    "https://idp.example.org/realms/health",
    "clientregistry",
    "secret",
    {"cr-admin": "admin", "cr-reviewer": "reviewer", "cr-auditor": "auditor"},
    role_claim="realm_access.roles",
)


def test_a_dotted_path_reads_keycloaks_realm_roles() -> None:
    claims = {"realm_access": {"roles": ["cr-auditor", "offline_access"]}}
    assert claim_at(claims, "realm_access.roles") == ["cr-auditor", "offline_access"]
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at({"realm_access": "flat"}, "realm_access.roles") is None


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["cr-auditor"], "auditor"),
        (["cr-auditor", "cr-reviewer"], "reviewer"),
        (["cr-reviewer", "cr-admin", "x"], "admin"),
        ("cr-reviewer", "reviewer"),
    ],
)
def test_the_most_privileged_mapped_role_wins(roles: object, expected: str) -> None:
    assert registry_role({"realm_access": {"roles": roles}}, KEYCLOAK) == expected


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "no 'realm_access.roles' claim"),
        ({"realm_access": {"roles": ["guest"]}}, "guest"),
        ({"realm_access": {"roles": {"cr-admin": True}}}, "not a list"),
        ({"realm_access": {"roles": []}}, "none"),
    ],
)
def test_no_mapped_role_is_403(claims: dict[str, object], reason: str) -> None:
    with pytest.raises(OidcRefused) as refused:
        registry_role(claims, KEYCLOAK)
    assert refused.value.status == 403 and reason in refused.value.reason


def test_a_login_flow_survives_its_cookie_and_nothing_else_does() -> None:
    flow = LoginFlow("abc123", "def456", "A" * 64)
    assert LoginFlow.load(flow.dump()) == flow
    for broken in (None, "", "a.b", "a.b.c.d", "a.b.c d", "a.b." + "x" * 200, "a;b.c.d"):
        assert LoginFlow.load(broken) is None, broken
