"""Who is calling: the client system behind a TLS client certificate.

The TLS layer already refused certificates from other CAs, expired or revoked ones; this
checks again (defence in depth, and for revocations made while a connection stays open) and
maps the certificate's CN to a configured client system.

The dependencies are ``async`` because they do no blocking work (the certificate check is
cached, the revocation list a ``stat``): FastAPI would run plain functions in the thread pool,
a thread hop each per request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from clientregistry.api.trusted_proxy import proxied_system
from clientregistry.fhir.errors import FhirError, forbidden, unauthenticated
from clientregistry.registry.context import RegistryContext
from clientregistry.security.authority import CertificateAuthority
from clientregistry.security.certificates import CertificateRefused, verify_client_certificate
from clientregistry.settings import ClientSystemConfig


def request_context(request: Request) -> RegistryContext:
    """The registry the application serves."""
    context: RegistryContext = request.app.state.context
    return context


async def context_of(request: Request) -> RegistryContext:
    """A dependency: :func:`request_context`."""
    return request_context(request)


def _client_certificate(request: Request) -> str | None:
    tls: dict[str, Any] = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return chain[0] if chain else None


async def current_system(request: Request) -> ClientSystemConfig:
    """A dependency: :func:`request_system`."""
    return request_system(request)


def request_system(request: Request) -> ClientSystemConfig:
    """The configured client system that holds the request's certificate, or that a trusted
    proxy names (:mod:`~clientregistry.api.trusted_proxy`); 401/403 otherwise."""
    settings = request_context(request).settings
    name = proxied_system(request, settings) or _certificate_holder(request)
    system = settings.systems.get(name)
    if system is None:
        raise forbidden(f"{name!r} is not a client system of this registry")
    request.state.agent = name
    return system


def _certificate_holder(request: Request) -> str:
    pem = _client_certificate(request)
    if pem is None:
        raise unauthenticated("A client certificate issued by this registry is required")
    authority: CertificateAuthority = request.app.state.authority
    try:
        identity = verify_client_certificate(pem, authority.cert, authority.revoked_serials())
    except CertificateRefused as error:
        raise FhirError(401, "login", f"Client certificate refused: {error.reason}") from None
    return identity.system


def require(permission: str) -> Any:
    """A dependency: the current system, which must hold ``permission``."""

    async def check(
        system: Annotated[ClientSystemConfig, Depends(current_system)],
    ) -> ClientSystemConfig:
        if permission not in system.permissions:
            raise forbidden(f"{system.name!r} may not {permission.replace('-', ' ')}")
        return system

    return check


CurrentSystem = Annotated[ClientSystemConfig, Depends(current_system)]
Submitter = Annotated[ClientSystemConfig, Depends(require("submit"))]
Context = Annotated[RegistryContext, Depends(context_of)]
