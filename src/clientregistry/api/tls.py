"""The TLS handshake of each connection, and the client certificate handed to the application.

**Handshakes.** With a ``tls_context`` on uvicorn's config (``clientregistry serve`` sets it,
and no ``ssl`` for uvicorn itself), the connection arrives as plain TCP and this protocol
runs the TLS handshake (:meth:`asyncio.loop.start_tls`), so that it sees a refused one: a
certificate from another CA, expired or revoked, a protocol or cipher the server does not
speak. The event loop would otherwise drop it silently (it logs handshake errors only in debug
mode). Each refusal is logged (a warning with the peer's address and OpenSSL's reason) and
audited (``tls-refused``, outcome 4, the peer's address, the reason) with an id of its own, in
a worker thread, off the event loop. A peer that closes the connection before finishing the
handshake (a port probe) is logged at debug level only.

**The client certificate.** uvicorn (0.54) does not put the peer certificate into the ASGI
scope. This protocol reads it from the connection's ``ssl_object`` once the handshake is done
and adds it to every request's scope as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings, leaf first), which is where
the ASGI spec says it belongs. The application then decides per route what it needs.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextvars
import logging
import ssl
import uuid
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


log = logging.getLogger(__name__)


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol of ``loop``: uvloop's (Cython) on its loop, else asyncio's."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    return asyncio.sslproto.SSLProtocol


REFUSED_EVENT = "tls-refused"
_DROPPED = (ssl.SSLEOFError, ConnectionError, TimeoutError, asyncio.TimeoutError)
"""Handshake failures that are the peer going away, not a refusal."""


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _reason(error: BaseException) -> str:
    """OpenSSL's reason for a refused handshake (``certificate verify failed: certificate
    has expired``), or the error's text."""
    verify = getattr(error, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"[:500]
    return str(getattr(error, "reason", None) or error)[:500] or type(error).__name__


def _audit_refusal(app: Any, peer: str | None, reason: str, event_id: str) -> None:
    """Audit a refused handshake (in a worker thread; never raises)."""
    context = getattr(getattr(app, "state", None), "context", None)
    if context is None:
        return
    from clientregistry.api.audit import audit_refused_handshake
    from clientregistry.request_id import start_request

    def write() -> None:
        start_request(event_id)
        audit_refused_handshake(context, peer, reason)

    contextvars.Context().run(write)  # (the id stays out of the worker thread's context)


class _TLSExtension:
    """Runs the TLS handshake (when the config has a ``tls_context``) and adds the ASGI TLS
    extension to the scope of every request on the connection."""

    app: Any
    config: Any
    loop: asyncio.AbstractEventLoop
    transport: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls_context = getattr(self.config, "tls_context", None)
        if tls_context is None or transport.get_extra_info("sslcontext") is not None:
            self._connected(transport)  # TLS done by the loop, or the handshake is over
            return
        # Put the loop's own TLS protocol between the connection and this one, at once
        # (nothing read can reach the HTTP parser first); it calls connection_made again
        # with the TLS transport once the handshake succeeds.
        waiter = self.loop.create_future()
        tls = _ssl_protocol_class(self.loop)(self.loop, self, tls_context, waiter, server_side=True)
        peer = _peer(transport)
        waiter.add_done_callback(lambda done: self._handshake_done(done, peer))
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, done: asyncio.Future[None], peer: str | None) -> None:
        error = None if done.cancelled() else done.exception()
        if error is None:
            return
        if isinstance(error, _DROPPED):
            log.debug("TLS handshake with %s not finished: %r", peer, error)
            return
        reason, event_id = _reason(error), uuid.uuid4().hex
        log.warning("TLS handshake from %s refused: %s [%s]", peer, reason, event_id)
        self.loop.run_in_executor(None, _audit_refusal, self.app, peer, reason, event_id)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # the handshake never finished
            return
        super().connection_lost(exc)  # type: ignore[misc]

    def _connected(self, transport: asyncio.BaseTransport) -> None:
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
