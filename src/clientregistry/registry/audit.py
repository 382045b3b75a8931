"""Recording what happened: one AuditEvent (FHIR R4, DICOM codes) per request, in the store.

Written in the same transaction as the change it describes; failures are recorded in a
transaction of their own so that a refused or failed request is audited too. Every event is
a link of the tamper-evident chain (:mod:`clientregistry.store.audit_chain`), linked as it is
inserted: insert events through these functions (or the ORM), never with a bare ``INSERT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from clientregistry.request_id import current_request_id, with_request_id
from clientregistry.store.audit_chain import insert_linked
from clientregistry.store.enums import AgentKind, AuditAction

DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://terminology.hl7.org/CodeSystem/restful-interaction"


def audit_resource(
    *,
    action: str,
    outcome: int,
    recorded: datetime,
    agent: str,
    agent_kind: AgentKind,
    source_address: str | None,
    entity: str | None,
    interaction: str,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """A FHIR R4 AuditEvent describing one request."""
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": INTERACTION, "code": interaction}],
        "action": action,
        "recorded": recorded.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "outcome": str(outcome),
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": DCM,
                            "code": "110153" if agent_kind is AgentKind.SYSTEM else "110150",
                            "display": "Source Role ID"
                            if agent_kind is AgentKind.SYSTEM
                            else "Application",
                        }
                    ]
                },
                "who": {"display": agent},
                "requestor": True,
                **({"network": {"address": source_address, "type": "2"}} if source_address else {}),
            }
        ],
        "source": {"observer": {"display": "clientregistry"}},
    }
    if entity:
        resource["entity"] = [
            {
                "what": {"reference": entity},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "detail": [
                    {"type": key, "valueString": str(value)}
                    for key, value in detail.items()
                    if value is not None
                ],
            }
        ]
    return with_request_id(resource)


def event_row(
    *,
    action: AuditAction,
    outcome: int,
    interaction: str,
    agent: str,
    agent_kind: AgentKind,
    source_address: str | None,
    entity: str | None,
    detail: dict[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``audit_event`` row of one audited action, with its FHIR AuditEvent."""
    recorded = now or datetime.now(UTC)
    return {
        "recorded": recorded,
        "action": action,
        "outcome": outcome,
        "event_type": interaction,
        "agent": agent,
        "agent_kind": agent_kind,
        "source_address": source_address,
        "entity": entity,
        "detail": detail,
        "request_id": current_request_id(),
        "resource": audit_resource(
            action=action.value,
            outcome=outcome,
            recorded=recorded,
            agent=agent,
            agent_kind=agent_kind,
            source_address=source_address,
            entity=entity,
            interaction=interaction,
            detail=detail,
        ),
    }


def record(
    session: Session,
    *,
    action: AuditAction,
    outcome: int,
    interaction: str,
    agent: str,
    agent_kind: AgentKind,
    source_address: str | None,
    entity: str | None,
    detail: dict[str, Any],
) -> None:
    """Write one audit event in ``session``'s transaction (committed with it).

    One ``INSERT`` on the session's connection, straight to the driver: the event has no
    relations, so it need not wait for (nor trigger) a flush of the session's objects."""
    row = event_row(
        action=action,
        outcome=outcome,
        interaction=interaction,
        agent=agent,
        agent_kind=agent_kind,
        source_address=source_address,
        entity=entity,
        detail=detail,
    )
    insert_events(session.connection(), [row])


def insert_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``audit_event`` rows (:func:`event_row`), linked into the chain, in order."""
    insert_linked(connection, rows)


def _submission_row(
    result: Any,
    system_name: str,
    source_address: str | None,
    extra: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    detail = {
        "cruid": result.golden_id,
        "match": result.status.value,
        "score": result.score,
        "rule": result.rule_set,
    }
    if extra:
        detail.update(extra)
    return event_row(
        action=AuditAction.CREATE if result.created else AuditAction.UPDATE,
        outcome=0,
        interaction="create" if result.created else "update",
        agent=system_name,
        agent_kind=AgentKind.SYSTEM,
        source_address=source_address,
        entity=f"Patient/{result.record_id}",
        detail=detail,
        now=now,
    )


def record_submission(
    session: Session,
    result: Any,
    system_name: str,
    source_address: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Audit one submission (create or update) with its CRUID and how it was matched
    (``extra``: more detail, such as the import it came from)."""
    row = _submission_row(result, system_name, source_address, extra)
    insert_events(session.connection(), [row])


def record_submissions(
    session: Session,
    results: Sequence[tuple[Any, str]],
    source_address: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """:func:`record_submission` for many ``(result, system name)``, in one statement."""
    now = datetime.now(UTC)
    rows = [_submission_row(r, name, source_address, extra, now) for r, name in results]
    insert_events(session.connection(), rows)
