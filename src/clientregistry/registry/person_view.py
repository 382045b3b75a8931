"""One person, as a data manager reads it: every source record side by side with the fields
that differ marked, identifiers per system, each record's versions (what changed), and the
history of the person's links — who linked, broke, joined, resolved or reverted what, when
and why.

The history is read from the audit trail: the events about the records the person holds, or
held (a link row names them), newest first: submissions (the engine's decision: match,
score, rule) and people's link actions (with their reason and whether they can still be
reverted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.matching.normalize import fold
from clientregistry.registry.actor import Actor, Reading, audit_read, not_found
from clientregistry.registry.audit_trail import audit_item
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import REVERTIBLE
from clientregistry.registry.people import broken_matches, patient_identifiers
from clientregistry.registry.review import RecordSummary, summary
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind
from clientregistry.store.models import (
    AuditEvent,
    GoldenRecord,
    Link,
    SourceRecord,
    SourceRecordVersion,
)

MAX_HISTORY: Final = 200
"""Most history entries shown for one person."""
MAX_VERSIONS: Final = 20
"""Most versions shown for one record."""
SUBMISSIONS: Final = frozenset({"create", "update"})
HISTORY_EVENTS: Final = SUBMISSIONS | REVERTIBLE

COMPARED: Final = (
    "given",
    "family",
    "birthDate",
    "gender",
    "phone",
    "email",
    "address",
    "identifiers",
)
"""The rows of the side-by-side table."""


class IdentifierItem(BaseModel):
    system: str
    value: str
    own: bool = Field(description="The submitting system's own record id")


class VersionItem(BaseModel):
    version: int
    last_updated: datetime
    changed: list[str] = Field(description="Top-level elements that differ from the version before")


class MemberRecord(BaseModel):
    record: RecordSummary
    identifiers: list[IdentifierItem]
    broken_with: list[str] = Field(description="Records marked as not the same person")
    versions: list[VersionItem] = Field(description="Newest first")


class ComparedField(BaseModel):
    field: str
    values: list[str | None] = Field(description="One per record, in the members' order")
    differs: bool


class HistoryItem(BaseModel):
    event_id: int
    recorded: datetime
    event_type: str
    agent: str
    agent_kind: AgentKind
    outcome: int
    record_id: str | None
    golden_before: str | None = None
    golden_after: str | None = None
    match: str | None = Field(default=None, description="A submission's match status")
    score: float | None = None
    rule: str | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None
    revertible: bool


class PersonView(BaseModel):
    golden_id: str
    version: int
    active: bool
    replaced_by: str | None
    last_updated: datetime
    members: list[MemberRecord]
    compared: list[ComparedField]
    identifiers_by_system: dict[str, list[str]]
    history: list[HistoryItem]
    history_capped: bool


# ----------------------------------------------------------------------------- fields


def _strings(items: Any, key: str | None = None) -> list[str]:
    out = []
    for item in items if isinstance(items, list) else []:
        value = item.get(key) if key is not None and isinstance(item, Mapping) else item
        if isinstance(value, str) and value.strip():
            out.append(value.strip())
    return out


def _names(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    names = resource.get("name")
    return [n for n in names if isinstance(n, Mapping)] if isinstance(names, list) else []


def _telecom(resource: Mapping[str, Any], system: str) -> list[str]:
    points = resource.get("telecom")
    return (
        [
            p["value"]
            for p in points
            if isinstance(p, Mapping)
            and p.get("system") == system
            and isinstance(p.get("value"), str)
        ]
        if isinstance(points, list)
        else []
    )


def _address(resource: Mapping[str, Any]) -> list[str]:
    out = []
    for address in resource.get("address") or ():
        if not isinstance(address, Mapping):
            continue
        parts = _strings(address.get("line"))
        for key in ("city", "district", "state", "postalCode", "country"):
            value = address.get(key)
            if isinstance(value, str) and value.strip():
                parts.append(value.strip())
        if parts:
            out.append(", ".join(parts))
    return out


def field_values(resource: Mapping[str, Any], own_systems: Sequence[str]) -> dict[str, str | None]:
    """The compared fields of a Patient as display text (None: absent)."""
    names = _names(resource)
    values: dict[str, list[str]] = {
        "given": [g for n in names for g in _strings(n.get("given"))],
        "family": [f for n in names for f in _strings([n.get("family")])],
        "birthDate": _strings([resource.get("birthDate")]),
        "gender": _strings([resource.get("gender")]),
        "phone": _telecom(resource, "phone"),
        "email": _telecom(resource, "email"),
        "address": _address(resource),
        "identifiers": [
            f"{i['system']}|{i['value']}"
            for i in patient_identifiers(resource)
            if i["system"] not in own_systems
        ],
    }
    return {key: ", ".join(items) if items else None for key, items in values.items()}


def _differs(values: Sequence[str | None]) -> bool:
    present = {" ".join(fold(v).split()) for v in values if v}
    return len(present) > 1


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    keys = (set(before) | set(after)) - {"meta", "id", "resourceType"}
    return sorted(k for k in keys if before.get(k) != after.get(k))


# ----------------------------------------------------------------------------- history


def _history_item(event: AuditEvent) -> HistoryItem:
    item = audit_item(event)
    detail = event.detail or {}
    record_id = event.entity.removeprefix("Patient/") if event.entity else None
    score = detail.get("score")
    return HistoryItem(
        event_id=event.id,
        recorded=event.recorded,
        event_type=event.event_type,
        agent=event.agent,
        agent_kind=event.agent_kind,
        outcome=event.outcome,
        record_id=record_id,
        golden_before=_optional_text(detail.get("golden_before")),
        golden_after=_optional_text(detail.get("golden_after") or detail.get("cruid")),
        match=_optional_text(detail.get("match")),
        score=float(score) if isinstance(score, int | float) else None,
        rule=_optional_text(detail.get("rule")),
        reason=_optional_text(detail.get("reason")),
        detail={k: v for k, v in detail.items() if k != "changes"},
        revertible=item.revertible,
    )


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _history(session: Session, golden_id: str, members: Sequence[str]) -> tuple[list[Any], bool]:
    former = session.scalars(
        select(Link.source_record_id).where(Link.golden_id == golden_id).distinct()
    ).all()
    records = sorted(set(members) | set(former))
    entities = [f"Patient/{r}" for r in records] + [f"Patient/{golden_id}"]
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity.in_(entities), AuditEvent.event_type.in_(HISTORY_EVENTS))
        .order_by(AuditEvent.id.desc())
        .limit(MAX_HISTORY + 1)
    ).all()
    return [_history_item(e) for e in events[:MAX_HISTORY]], len(events) > MAX_HISTORY


# ----------------------------------------------------------------------------- the use case


def _versions(session: Session, record_ids: Sequence[str]) -> dict[str, list[VersionItem]]:
    out: dict[str, list[VersionItem]] = {r: [] for r in record_ids}
    if not record_ids:
        return out
    rows = session.execute(
        select(
            SourceRecordVersion.record_id,
            SourceRecordVersion.version,
            SourceRecordVersion.last_updated,
            SourceRecordVersion.resource,
        )
        .where(SourceRecordVersion.record_id.in_(record_ids))
        .order_by(SourceRecordVersion.record_id, SourceRecordVersion.version)
    ).all()
    previous: dict[str, Mapping[str, Any]] = {}
    for record_id, version, last_updated, resource in rows:
        before = previous.get(record_id)
        changed = _changed(before, resource) if before is not None else []
        out[record_id].append(
            VersionItem(version=version, last_updated=last_updated, changed=changed)
        )
        previous[record_id] = resource
    return {r: list(reversed(items))[:MAX_VERSIONS] for r, items in out.items()}


def person_view(context: RegistryContext, actor: Actor, golden_id: str) -> PersonView:
    """One person (404 when there is no such golden record)."""
    own = context.settings.record_id_systems
    with transaction(context.sessions, write=False) as session:
        golden = session.get(GoldenRecord, golden_id)
        if golden is None:
            raise not_found(f"no golden record Patient/{golden_id}", golden=golden_id)
        records = list(
            session.scalars(
                select(SourceRecord)
                .where(SourceRecord.golden_id == golden_id)
                .order_by(SourceRecord.client_system, SourceRecord.id)
            )
        )
        ids = [r.id for r in records]
        broken = broken_matches(session, ids)
        versions = _versions(session, ids)
        history, capped = _history(session, golden_id, ids)
        members = [
            MemberRecord(
                record=summary(r),
                identifiers=[
                    IdentifierItem(system=i["system"], value=i["value"], own=i["system"] in own)
                    for i in patient_identifiers(r.resource)
                ],
                broken_with=sorted(broken[r.id]),
                versions=versions[r.id],
            )
            for r in records
        ]
        per_record = [field_values(r.resource, own) for r in records]
        by_system: dict[str, list[str]] = {}
        for member in members:
            for ident in member.identifiers:
                values = by_system.setdefault(ident.system, [])
                if ident.value not in values:
                    values.append(ident.value)
        view = PersonView(
            golden_id=golden.id,
            version=golden.version,
            active=golden.active,
            replaced_by=golden.replaced_by,
            last_updated=golden.last_updated,
            members=members,
            compared=[
                ComparedField(
                    field=name,
                    values=[values[name] for values in per_record],
                    differs=_differs([values[name] for values in per_record]),
                )
                for name in COMPARED
            ],
            identifiers_by_system=dict(sorted(by_system.items())),
            history=history,
            history_capped=capped,
        )
    audit_read(context, actor, Reading("person-read", entity=f"Patient/{golden_id}"))
    return view


def record_version(
    context: RegistryContext, actor: Actor, record_id: str, version: int
) -> dict[str, Any]:
    """One stored version of a source record (the Patient as it was submitted then)."""
    with transaction(context.sessions, write=False) as session:
        row = session.get(SourceRecordVersion, (record_id, version))
        if row is None:
            raise not_found(
                f"no version {version} of Patient/{record_id}", record=record_id, version=version
            )
        resource = dict(row.resource)
    audit_read(
        context,
        actor,
        Reading("record-version-read", entity=f"Patient/{record_id}", detail={"version": version}),
    )
    return resource
