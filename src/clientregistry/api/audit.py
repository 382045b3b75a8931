"""Auditing at the HTTP edge: reads and refusals, each in a short transaction of its own.

Writes are audited inside their own transaction by the routes. A read is audited after it,
in a separate write transaction, so that on SQLite a read never holds the write lock while it
reads; a refused or failed request is audited too (outcome 4 for the caller's error, 8 for
ours), so the trail shows who was turned away.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from clientregistry.api.tls import REFUSED_EVENT
from clientregistry.registry import audit
from clientregistry.registry.context import RegistryContext
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.errors import StoreError

log = logging.getLogger(__name__)

_ACTIONS = {"GET": AuditAction.READ, "POST": AuditAction.CREATE, "PUT": AuditAction.UPDATE}


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def audit_read(
    context: RegistryContext,
    request: Request,
    *,
    agent: str,
    interaction: str,
    entity: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a successful read."""
    with transaction(context.sessions) as session:
        audit.record(
            session,
            action=AuditAction.READ,
            outcome=0,
            interaction=interaction,
            agent=agent,
            agent_kind=AgentKind.SYSTEM,
            source_address=client_address(request),
            entity=entity,
            detail=detail or {},
        )


def audit_failure(context: RegistryContext, request: Request, status: int, reason: str) -> None:
    """Record a refused or failed request, on any path (never raises: a failing audit must
    not hide the original error)."""
    agent = getattr(request.state, "agent", None) or "unauthenticated"
    action = _ACTIONS.get(request.method, AuditAction.EXECUTE)
    if "$" in request.url.path:
        action = AuditAction.EXECUTE  # an operation ($match, $ihe-pix)
    elif request.url.path.endswith("/_search"):
        action = AuditAction.READ
    path = request.url.path.removeprefix("/fhir/")
    entity = "/".join(path.split("/")[:2])[:255] if path.startswith("Patient/") else None
    entity = _printable(entity) if entity else None
    try:
        with transaction(context.sessions) as session:
            audit.record(
                session,
                action=action,
                outcome=4 if status < 500 else 8,
                interaction=_printable(f"{request.method} {request.url.path}")[:64],
                agent=agent,
                agent_kind=AgentKind.SYSTEM,
                source_address=client_address(request),
                entity=entity,
                detail={"status": status, "reason": _printable(reason)[:500]},
            )
    except StoreError as error:
        log.error("could not audit a failed request: %s", error)


def audit_refused_handshake(context: RegistryContext, peer: str | None, reason: str) -> None:
    """Record a TLS handshake the server refused (:mod:`clientregistry.api.tls`): who
    connected and OpenSSL's reason (never raises)."""
    try:
        with transaction(context.sessions) as session:
            audit.record(
                session,
                action=AuditAction.EXECUTE,
                outcome=4,
                interaction=REFUSED_EVENT,
                agent="unauthenticated",
                agent_kind=AgentKind.SYSTEM,
                source_address=peer,
                entity=None,
                detail={"reason": _printable(reason)[:500]},
            )
    except StoreError as error:
        log.error("could not audit a refused TLS handshake: %s", error)


def _printable(text: str) -> str:
    """``text`` without NUL characters (which PostgreSQL cannot store)."""
    return text.replace("\x00", "\\0")
