"""Small FHIR datatype helpers: instants, references, version tags."""

from __future__ import annotations

from datetime import UTC, datetime


def instant(moment: datetime) -> str:
    """A FHIR ``instant`` in UTC with milliseconds: ``2024-05-01T12:30:00.000Z``.

    ``moment`` must be time-zone aware (a naive datetime has no defined instant).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a FHIR instant needs a time-zone aware datetime")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def reference(resource_type: str, id: str, version: str | int | None = None) -> str:
    """A relative reference ``Patient/123`` (``Patient/123/_history/2`` with a version)."""
    if version is None:
        return f"{resource_type}/{id}"
    return f"{resource_type}/{id}/_history/{version}"


def patient_reference(id_or_reference: str) -> str:
    """``Patient/<id>`` from an id, or the reference unchanged if it already has a type."""
    return id_or_reference if "/" in id_or_reference else f"Patient/{id_or_reference}"


def etag(version: str | int) -> str:
    """The weak ETag FHIR uses for a version: ``W/"2"``."""
    return f'W/"{version}"'
