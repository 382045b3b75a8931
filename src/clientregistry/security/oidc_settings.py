"""Single sign-on settings: the ``[oidc]`` section of ``config.toml``.

::

    [oidc]
    issuer = "https://keycloak.example.org/realms/health"   # empty or absent: no SSO
    client_id = "clientregistry"
    client_secret = "…"              # or the environment variable CR_OIDC_CLIENT_SECRET
    scopes = "openid profile"
    username_claim = "preferred_username"
    role_claim = "realm_access.roles"  # a dotted path into the ID token (Keycloak's realm roles)
    ca_file = ""                      # the identity provider's CA, when not a public one
    redirect_url = ""                 # default: https://<this host>/auth/oidc/callback

    [oidc.roles]                      # the provider's role → the registry's
    cr-admin = "admin"
    cr-reviewer = "reviewer"
    cr-auditor = "auditor"

Every key can be overridden by ``CR_OIDC_<KEY>`` (``CR_OIDC_ISSUER``, ``CR_OIDC_CLIENT_SECRET``
…); ``CR_OIDC_ROLES`` is ``provider-role=role,…``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clientregistry.errors import Problem

ROLE_NAMES = ("admin", "reviewer", "auditor")
"""The registry's roles, most privileged first (a person mapped to several gets the first)."""
KEYS = (
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "username_claim",
    "role_claim",
    "ca_file",
    "redirect_url",
)


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """An identity provider people log in with (OpenID Connect, authorization code + PKCE)."""

    issuer: str
    client_id: str
    client_secret: str
    roles: Mapping[str, str] = field(default_factory=dict)
    scopes: str = "openid profile"
    username_claim: str = "preferred_username"
    role_claim: str = "roles"
    ca_file: Path | None = None
    redirect_url: str = ""


def parse_oidc(
    section: Any, environ: Mapping[str, str], data_dir: Path, problems: list[Problem]
) -> OidcSettings | None:
    """The ``[oidc]`` section with its environment overrides; None when no issuer is set.
    Problems are appended to ``problems``."""
    raw: dict[str, Any] = dict(section) if isinstance(section, dict) else {}
    if section is not None and not isinstance(section, dict):
        problems.append(Problem("oidc", "must be a table"))
    for key in KEYS:
        name = f"CR_OIDC_{key.upper()}"
        if name in environ:
            raw[key] = environ[name]
    roles = raw.get("roles") or {}
    if "CR_OIDC_ROLES" in environ:
        pairs = (item.split("=", 1) for item in environ["CR_OIDC_ROLES"].split(",") if item)
        roles = {left.strip(): right.strip() for left, right in (p for p in pairs if len(p) == 2)}
    if not raw.get("issuer"):
        return None
    found = {key: raw.get(key) for key in KEYS}
    for key, value in found.items():
        if value is not None and not isinstance(value, str):
            problems.append(Problem(f"oidc.{key}", f"must be text, not {value!r}"))
    issuer = str(found["issuer"]).rstrip("/")
    if not issuer.startswith("https://"):
        problems.append(Problem("oidc.issuer", f"must be an https:// URL, not {issuer!r}"))
    for key in ("client_id", "client_secret"):
        if not found[key]:
            problems.append(Problem(f"oidc.{key}", "is required with an issuer"))
    mapped: dict[str, str] = {}
    if not isinstance(roles, dict) or not roles:
        problems.append(
            Problem("oidc.roles", "map at least one provider role to " + "/".join(ROLE_NAMES))
        )
    else:
        for given, role in roles.items():
            if role not in ROLE_NAMES:
                problems.append(Problem(f"oidc.roles.{given}", f"unknown role {role!r}"))
            else:
                mapped[str(given)] = str(role)
    ca_file = None
    if found["ca_file"]:
        ca_file = Path(str(found["ca_file"]))
        ca_file = ca_file if ca_file.is_absolute() else data_dir / ca_file
        if not ca_file.is_file():
            problems.append(Problem("oidc.ca_file", f"{ca_file} is not a file"))
    return OidcSettings(
        issuer=issuer,
        client_id=str(found["client_id"] or ""),
        client_secret=str(found["client_secret"] or ""),
        roles=mapped,
        scopes=str(found["scopes"] or "openid profile"),
        username_claim=str(found["username_claim"] or "preferred_username"),
        role_claim=str(found["role_claim"] or "roles"),
        ca_file=ca_file,
        redirect_url=str(found["redirect_url"] or ""),
    )
