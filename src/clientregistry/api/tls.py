"""Handing the TLS client certificate to the application.

uvicorn (0.54) terminates TLS but does not put the peer certificate into the ASGI scope. This
protocol subclass reads it from the connection's ``ssl_object`` when the connection is made
and adds it to every request's scope as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings, leaf first), which is where
the ASGI spec says it belongs. The application then decides per route what it needs.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


class _TLSExtension:
    """Adds the ASGI TLS extension to the scope of every request on the connection."""

    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        extension = _tls_extension(transport)
        if extension is None:
            return
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope.setdefault("extensions", {})["tls"] = extension
            await inner(scope, receive, send)

        self.app = app


class TLSProtocol(_TLSExtension, H11Protocol):
    """uvicorn's h11 protocol (pure Python), plus the ASGI TLS extension."""


class HttpToolsTLSProtocol(_TLSExtension, HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, the faster parser), plus the ASGI TLS extension."""
