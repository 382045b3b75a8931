"""The ``[oidc]`` section: off unless an issuer is set, every problem named."""

from __future__ import annotations

from pathlib import Path

from clientregistry.errors import Problem
from clientregistry.security.oidc_settings import parse_oidc

SECTION = {
    "issuer": "https://idp.example.org/realms/health/",
    "client_id": "clientregistry",
    "client_secret": "s3cret",
    "roles": {"cr-admin": "admin"},
}


def test_without_an_issuer_there_is_no_single_sign_on(tmp_path: Path) -> None:
    problems: list[Problem] = []
    assert parse_oidc(None, {}, tmp_path, problems) is None
    assert parse_oidc({"client_id": "x"}, {}, tmp_path, problems) is None
    assert problems == []


def test_a_section_and_its_environment_overrides(tmp_path: Path) -> None:
    problems: list[Problem] = []
    env = {"CR_OIDC_CLIENT_SECRET": "from-env", "CR_OIDC_ROLES": "g1=reviewer,g2=auditor"}
    settings = parse_oidc(SECTION, env, tmp_path, problems)
    assert problems == []
    assert settings is not None
    assert settings.issuer == "https://idp.example.org/realms/health"  # no trailing slash
    assert settings.client_secret == "from-env"
    assert dict(settings.roles) == {"g1": "reviewer", "g2": "auditor"}
    assert settings.scopes == "openid profile" and settings.role_claim == "roles"


def test_every_problem_is_named(tmp_path: Path) -> None:
    problems: list[Problem] = []
    section = {
        "issuer": "http://idp.example.org",
        "client_id": "",
        "roles": {"cr-admin": "superuser"},
        "ca_file": "missing.pem",
        "scopes": 7,
    }
    parse_oidc(section, {}, tmp_path, problems)
    assert {p.location for p in problems} == {
        "oidc.issuer",
        "oidc.client_id",
        "oidc.client_secret",
        "oidc.roles.cr-admin",
        "oidc.ca_file",
        "oidc.scopes",
    }
