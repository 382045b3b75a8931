"""Behind a trusted proxy (nginx, OpenHIM in OpenCR's mediator mode): whom to believe.

A TLS-terminating reverse proxy verifies the client system's certificate itself and forwards
the request with the system's name in a header (``x-openhim-clientid``, as OpenHIM sends it,
or ``settings.proxy_client_header``) and the client's address in ``X-Forwarded-For``. Both are
believed only on connections from ``settings.trusted_proxies`` (``[proxy]
trusted_addresses``):

* :class:`TrustedProxy`, an ASGI middleware installed by :func:`install` when proxies are
  configured, marks a request from a trusted proxy in its scope and, for those only, takes the
  client's address from ``X-Forwarded-For`` and the scheme from ``X-Forwarded-Proto``
  (uvicorn's ``ProxyHeadersMiddleware``), so the audit trail and the login throttle see the
  real client, not the proxy;
* :func:`proxied_system` (called by :func:`clientregistry.api.deps.request_system`) answers
  the system the proxy names; the header from any other address is refused with 403, which
  the application's error handler audits (``AuditEvent`` outcome 4 with the peer's address
  and the reason) and this module logs as a warning.

An empty header from a trusted proxy means the proxy verified no certificate: the request
then needs a certificate of its own, which a proxied request does not carry, so it gets 401.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Sequence
from functools import partial

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clientregistry.fhir.errors import FhirError
from clientregistry.settings import ProxyNetwork, Settings

log = logging.getLogger(__name__)

SCOPE_KEY = "trusted_proxy"
"""``scope["extensions"][SCOPE_KEY]`` holds ``{"peer": address}`` for a trusted proxy's request."""
SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_trusted(address: str | None, networks: Sequence[ProxyNetwork]) -> bool:
    """Whether ``address`` (an IP address, as the connection reports it) is a trusted proxy."""
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _trusted_peer(networks: Sequence[ProxyNetwork], address: str | None) -> bool:
    return is_trusted(address, networks)


class TrustedProxy:
    """Marks requests from trusted proxies and takes the client's address from them."""

    def __init__(self, app: ASGIApp, networks: Sequence[ProxyNetwork]) -> None:
        self.app = app
        self.networks = tuple(networks)
        # a peer's address repeats on every request of its connections: decide once
        self.trusts = functools.lru_cache(maxsize=4096)(partial(_trusted_peer, self.networks))
        self.forwarded = ProxyHeadersMiddleware(
            app,  # type: ignore[arg-type]
            trusted_hosts=[str(network) for network in self.networks],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        if scope["type"] == "http" and self.trusts(peer):
            scope["extensions"] = {**(scope.get("extensions") or {}), SCOPE_KEY: {"peer": peer}}
            await self.forwarded(scope, receive, send)  # type: ignore[arg-type]
            return
        await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    """Add :class:`TrustedProxy` to ``app`` when ``settings`` name trusted proxies."""
    if settings.trusted_proxies:
        app.add_middleware(TrustedProxy, networks=settings.trusted_proxies)


def proxied_system(request: Request, settings: Settings) -> str | None:
    """The client system a trusted proxy names for this request; None when the request has no
    such header (or an empty one). 403 when a caller that is not a trusted proxy sends it, 400
    when the name is malformed."""
    header = settings.proxy_client_header
    values = request.headers.getlist(header)
    if not values:
        return None
    proxy = (request.scope.get("extensions") or {}).get(SCOPE_KEY)
    if proxy is None:
        peer = request.client.host if request.client else "(unknown)"
        log.warning("refused %s from %s, which is not a trusted proxy", header, peer)
        raise FhirError(
            403,
            "security",
            f"The {header} header is accepted only from a trusted proxy; {peer} is not one",
        )
    if len(values) > 1:
        raise FhirError(400, "security", f"The proxy sent {header} {len(values)} times")
    name = values[0].strip()
    if not name:
        return None
    if not SYSTEM_NAME.fullmatch(name):
        raise FhirError(400, "security", f"The proxy sent a malformed {header}: {name[:80]!r}")
    return name
