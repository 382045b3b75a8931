"""Reading records back: source records (demographics) and golden records (links only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, not_found
from clientregistry.fhir.patient import golden_record_resource
from clientregistry.registry.lookup import check_golden_read, source_view
from clientregistry.registry.submit import (
    RecordSnapshot,
    broken_with,
    replaced_records,
    source_resource,
)
from clientregistry.settings import ClientSystemConfig, Settings
from clientregistry.store.models import GoldenRecord, SourceRecord, SourceRecordVersion


def golden_resource(session: Session, golden: GoldenRecord) -> dict[str, Any]:
    members = session.scalars(
        select(SourceRecord.id).where(SourceRecord.golden_id == golden.id).order_by(SourceRecord.id)
    ).all()
    return golden_record_resource(
        golden.id,
        golden.version,
        golden.last_updated,
        members,
        golden.replaced_by,
        active=golden.active,
    )


def read_patient(
    session: Session, settings: Settings, patient_id: str
) -> tuple[dict[str, Any], bool]:
    """(resource, is golden record) for ``Patient/<id>``; 404 when there is none."""
    golden = session.get(GoldenRecord, patient_id)
    if golden is not None:
        return golden_resource(session, golden), True
    record = session.get(SourceRecord, patient_id)
    if record is None:
        raise not_found("Patient", patient_id)
    client = settings.systems.get(record.client_system)
    replaces = replaced_records(session, [record.id])[record.id]
    return source_resource(record, client, broken_with(session, record.id), replaces), False


def read_as(
    session: Session, settings: Settings, system: ClientSystemConfig, patient_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``Patient/<id>`` as stored and as ``system`` may see it (403 when it may not, 404
    when there is none; see :mod:`clientregistry.registry.lookup`)."""
    resource, is_golden = read_patient(session, settings, patient_id)
    if is_golden:
        check_golden_read(system)
        return resource, resource
    return resource, source_view(system, resource)


def found_as(
    session: Session, settings: Settings, system: ClientSystemConfig, patient_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """:func:`read_as` for a Patient a condition found: None instead of a 403 when
    ``system`` may not see it (it still learns that one exists)."""
    try:
        return read_as(session, settings, system, patient_id)
    except FhirError as error:
        if error.status != 403:
            raise
        return read_patient(session, settings, patient_id)[0], None


def history(session: Session, settings: Settings, patient_id: str) -> list[dict[str, Any]]:
    """Every version of a source record, newest first."""
    record = session.get(SourceRecord, patient_id)
    if record is None:
        raise not_found("Patient", patient_id)
    versions = session.scalars(
        select(SourceRecordVersion)
        .where(SourceRecordVersion.record_id == patient_id)
        .order_by(SourceRecordVersion.version.desc())
    ).all()
    client = settings.systems.get(record.client_system)
    replaces = replaced_records(session, [record.id])[record.id]
    out = []
    for version in versions:
        current = version.version == record.version
        snapshot = RecordSnapshot(
            id=record.id,
            version=version.version,
            last_updated=version.last_updated,
            resource=version.resource,
            client_system=record.client_system,
            golden_id=record.golden_id if current else None,
            match_status=record.match_status,
            replaced_by=record.replaced_by if current else None,
        )
        out.append(source_resource(snapshot, client, set(), replaces if current else ()))
    return out
