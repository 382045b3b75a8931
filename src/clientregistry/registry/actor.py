"""A person acting through the admin API or the web UI, and how what they read is audited.

The use cases people call (:mod:`~clientregistry.registry.reviewing`,
:mod:`~clientregistry.registry.audit_trail`, :mod:`~clientregistry.registry.accounts`, …) take
an :class:`Actor` — who, in which role, from where — and audit on its behalf, so that the
admin API and the web UI record the same events for the same action.

A use case that cannot do what was asked raises :class:`Refused` with an HTTP-like status
(404 nothing there, 409 the state forbids it, 400 a bad request), an English message, and a
``code`` with ``params`` that a user interface can translate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from clientregistry.errors import ClientRegistryError
from clientregistry.registry.audit import audit_resource
from clientregistry.registry.context import RegistryContext
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction, AuditOutcome, Role
from clientregistry.store.models import AuditEvent


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: an account, its role, and the address the request came from."""

    username: str
    role: Role
    source_address: str | None = None


class Refused(ClientRegistryError):
    """A request a use case turns down: ``status`` 400, 403, 404 or 409, ``message`` in
    English, ``code`` and ``params`` for a translated message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "",
        params: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.params: dict[str, Any] = params or {}
        super().__init__(message)


def not_found(message: str, **params: Any) -> Refused:
    return Refused(404, message, code="not-found", params=params)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a read was about, for its audit event."""

    event_type: str
    entity: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    action: AuditAction = AuditAction.READ


def _flat(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.dumps(value).decode()


def record_action(
    session: Session,
    *,
    agent: str,
    source_address: str | None,
    event_type: str,
    action: AuditAction,
    entity: str | None,
    detail: dict[str, Any],
    outcome: int = 0,
    agent_kind: AgentKind = AgentKind.USER,
) -> AuditEvent:
    """Audit what a person (or, merging Patients, a client system: ``agent_kind``) did
    (flushed, so the event has its id)."""
    now = datetime.now(UTC)
    event = AuditEvent(
        recorded=now,
        action=action,
        outcome=outcome,
        event_type=event_type,
        agent=agent,
        agent_kind=agent_kind,
        source_address=source_address,
        entity=entity,
        detail=detail,
        resource=audit_resource(
            action=action.value,
            outcome=outcome,
            recorded=now,
            agent=agent,
            agent_kind=agent_kind,
            source_address=source_address,
            entity=entity,
            interaction=event_type,
            detail={key: _flat(value) for key, value in detail.items()},
        ),
    )
    session.add(event)
    session.flush()
    return event


def audit_in(session: Session, actor: Actor, reading: Reading, *, outcome: int = 0) -> int:
    """Audit what ``actor`` did in ``session``'s transaction; the event's id."""
    event = record_action(
        session,
        agent=actor.username,
        source_address=actor.source_address,
        event_type=reading.event_type,
        action=reading.action,
        entity=reading.entity,
        detail=reading.detail,
        outcome=outcome,
    )
    return event.id


def audit_read(context: RegistryContext, actor: Actor, reading: Reading) -> None:
    """Audit a read in a write transaction of its own, after the read's (a read transaction
    that writes would have to upgrade its lock, which SQLite refuses under load)."""
    with transaction(context.sessions) as session:
        audit_in(session, actor, reading)


def audit_refusal(context: RegistryContext, actor: Actor, reading: Reading) -> None:
    """Audit something ``actor`` was refused (outcome 4), in a transaction of its own."""
    with transaction(context.sessions) as session:
        audit_in(session, actor, reading, outcome=AuditOutcome.MINOR_FAILURE)
