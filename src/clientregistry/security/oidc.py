"""OpenID Connect, authorization code flow with PKCE, against the organisation's identity
provider (Keycloak in many ministries): the protocol side of single sign-on.

:class:`OidcClient` (one per application) uses Authlib's OAuth 2 client (over httpx) and
joserfc (Authlib's JOSE library):

* :meth:`OidcClient.begin` — a :class:`LoginFlow` (``state``, ``nonce``, PKCE
  ``code_verifier``) and the provider's authorization URL (``code_challenge_method=S256``);
* :meth:`OidcClient.finish` — exchanges the code (client secret and code verifier) at the
  token endpoint and validates the ID token: signature against the provider's published keys
  (fetched again once when a key id is unknown), ``iss``, ``aud`` (must hold this client),
  ``azp`` with several audiences, ``exp``/``iat``/``nbf`` (:data:`LEEWAY` seconds of clock
  skew), ``nonce``; then maps the role claim to a registry role (:func:`registry_role`).

Every refusal is an :class:`OidcRefused` with the status to answer (401 for a token that does
not hold, 403 for a person without a role here, 502 when the provider cannot be reached) and a
reason for the audit trail. The provider's discovery document and keys are cached.
"""

from __future__ import annotations

import contextlib
import importlib
import ssl
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from clientregistry.security.oidc_settings import ROLE_NAMES, OidcSettings

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and warns when it uses httpx, this project's client
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client


def _transport_failures() -> tuple[type[Exception], ...]:
    """What a failed exchange with the provider raises: the errors of the HTTP client Authlib
    uses (httpx, or httpx2 where that is installed) and a body that is not JSON."""
    failures: list[type[Exception]] = [httpx.HTTPError, ValueError]
    with contextlib.suppress(ImportError):
        failures.append(importlib.import_module("httpx2").HTTPError)
    return tuple(failures)


TRANSPORT_FAILURES = _transport_failures()

LEEWAY = 60
"""Seconds of clock difference allowed between the provider and the registry."""
DISCOVERY_SECONDS = 3600
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
TIMEOUT = 10.0


class OidcRefused(Exception):
    """A single sign-on that does not let the person in."""

    def __init__(
        self, status: int, reason: str, *, username: str | None = None, audited: bool = False
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.username = username
        """Who, when the ID token was good enough to say."""
        self.audited = audited


@dataclass(frozen=True, slots=True)
class LoginFlow:
    """What the browser keeps between leaving for the provider and coming back."""

    state: str
    nonce: str
    code_verifier: str

    def dump(self) -> str:
        return f"{self.state}.{self.nonce}.{self.code_verifier}"

    @classmethod
    def load(cls, text: str | None) -> LoginFlow | None:
        parts = (text or "").split(".")
        if len(parts) != 3 or not all(p.isalnum() and len(p) <= 128 for p in parts):
            return None
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class Identity:
    """A person the provider vouched for, with the registry role their claims map to."""

    issuer: str
    subject: str
    username: str
    role: str
    claims: dict[str, Any]

    @property
    def sso_subject(self) -> str:
        return f"{self.issuer} {self.subject}"


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def registry_role(claims: dict[str, Any], settings: OidcSettings) -> str:
    """The registry role the role claim maps to (the most privileged when several do); 403
    when the claim is missing or maps to none."""
    value = claim_at(claims, settings.role_claim)
    if value is None:
        raise OidcRefused(403, f"the ID token has no {settings.role_claim!r} claim")
    given = [value] if isinstance(value, str) else value
    if not isinstance(given, list):
        raise OidcRefused(403, f"the {settings.role_claim!r} claim is not a list of roles")
    mapped = {settings.roles[r] for r in given if isinstance(r, str) and r in settings.roles}
    for role in ROLE_NAMES:
        if role in mapped:
            return role
    shown = ", ".join(str(r)[:40] for r in given[:10]) or "none"
    raise OidcRefused(403, f"none of the roles in {settings.role_claim!r} ({shown}) is mapped")


class OidcClient:
    """The registry as a relying party of one identity provider."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            self._verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    def _client(self, redirect_uri: str | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            redirect_uri=redirect_uri,
            scope=self.settings.scopes,
            code_challenge_method="S256",
            verify=self._verify,
            timeout=TIMEOUT,
        )

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for an hour)."""
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_SECONDS:
            url = f"{self.settings.issuer}/.well-known/openid-configuration"
            document = await self._get_json(url)
            if document.get("issuer") != self.settings.issuer:
                raise OidcRefused(
                    502, f"the provider's discovery names issuer {document.get('issuer')!r}"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(key), str):
                    raise OidcRefused(502, f"the provider's discovery has no {key}")
            self._metadata, self._metadata_at = document, time.monotonic()
        return self._metadata

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.request("GET", url, withhold_token=True)
            response.raise_for_status()
            document = response.json()
        except TRANSPORT_FAILURES as error:
            raise OidcRefused(502, f"the identity provider did not answer {url}: {error}") from None
        if not isinstance(document, dict):
            raise OidcRefused(502, f"{url} is not a JSON object")
        return document

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            document = await self._get_json(str((await self.metadata())["jwks_uri"]))
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as error:
                raise OidcRefused(502, f"the provider's keys cannot be read: {error}") from None
        return self._keys

    async def begin(self, redirect_uri: str) -> tuple[LoginFlow, str]:
        """A new login: its flow and the URL to send the browser to."""
        flow = LoginFlow(generate_token(43), generate_token(43), generate_token(64))
        endpoint = str((await self.metadata())["authorization_endpoint"])
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.settings.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": create_s256_code_challenge(flow.code_verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in endpoint else "?"
        return flow, f"{endpoint}{separator}{urlencode(query)}"

    async def finish(self, flow: LoginFlow, code: str, redirect_uri: str) -> Identity:
        """Exchange ``code`` and validate the ID token; the person and their role."""
        metadata = await self.metadata()
        try:
            async with self._client(redirect_uri) as client:
                token = await client.fetch_token(
                    str(metadata["token_endpoint"]),
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=flow.code_verifier,
                )
        except TRANSPORT_FAILURES as error:
            raise OidcRefused(502, f"the token endpoint did not answer: {error}") from None
        except OAuthError as error:  # the provider said no
            raise OidcRefused(401, f"the provider refused the code: {error}") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused(401, "the provider sent no ID token")
        claims = await self.validate(id_token, flow.nonce)
        username = claim_at(claims, self.settings.username_claim) or claims["sub"]
        if not isinstance(username, str) or not username.strip():
            raise OidcRefused(403, f"the {self.settings.username_claim!r} claim is not a name")
        username = username.strip()[:128]
        try:
            role = registry_role(claims, self.settings)
        except OidcRefused as refused:
            refused.username = username
            raise
        return Identity(self.settings.issuer, str(claims["sub"]), username, role, claims)

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of a valid ID token for this client and login; 401 otherwise."""
        keys = await self._key_set()
        try:
            decoded = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError):
            try:  # the provider may have rotated its keys: fetch them again, once
                decoded = jwt.decode(id_token, await self._key_set(True), algorithms=ALGORITHMS)
            except (JoseError, ValueError) as error:
                raise OidcRefused(401, f"the ID token is not valid: {error!r}") from None
        claims: dict[str, Any] = dict(decoded.claims)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": self.settings.issuer},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as error:
            raise OidcRefused(401, f"the ID token does not hold: {error}") from None
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.settings.client_id not in audiences:
            raise OidcRefused(401, f"the ID token is for another audience ({audience!r})")
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcRefused(401, "the ID token names several audiences but not this one as azp")
        return claims
