"""Security headers on every response: HSTS, no sniffing, no framing, no caching, a strict CSP.

An ASGI middleware (plain ASGI, not Starlette's ``BaseHTTPMiddleware``, so a request costs one
closure and a list extension). It adds each header of :data:`SECURITY_HEADERS` that the
response does not already carry, so a route or a later module (the web UI) can set its own
``Content-Security-Policy`` or ``Cache-Control``:

* ``Strict-Transport-Security`` — browsers use HTTPS only for this host, for two years (the
  registry serves nothing over plain HTTP);
* ``Content-Security-Policy`` — nothing may load, run or frame: the answers are JSON, and a
  JSON answer opened in a browser must not become a page. The interactive API documentation
  (``/docs``, Swagger UI from its CDN) gets :data:`DOCS_CSP` instead;
* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``Cross-Origin-Opener-Policy`` and ``Cross-Origin-Resource-Policy:
  same-origin``, ``Permissions-Policy`` (no camera, microphone or location);
* ``Cache-Control: no-store`` — answers carry personal data: no proxy or browser keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_MAX_AGE = 63_072_000
"""Two years, in seconds (Mozilla's recommendation)."""
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""Swagger UI's page: its script and styles from the CDN FastAPI names, one inline script."""
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect"})

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", f"max-age={HSTS_MAX_AGE}; includeSubDomains".encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
)
_CSP = b"content-security-policy"


def _missing(present: Iterable[tuple[bytes, bytes]], csp: bytes) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in present}
    wanted = [*SECURITY_HEADERS, (_CSP, csp)]
    return [(name, value) for name, value in wanted if name not in names]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` and a Content-Security-Policy to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = (DOCS_CSP if scope.get("path") in DOCS_PATHS else API_CSP).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.extend(_missing(headers, csp))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
