"""Settings shared by the command line and (later) the registry service."""

from __future__ import annotations

DEFAULT_RECORD_ID_SYSTEMS: tuple[str, ...] = (
    "http://clientregistry.org/openmrs",
    "http://clientregistry.org/dhis2",
    "http://clientregistry.org/lims",
    "http://openmrs.org/openmrs2",
    "http://health.go.ug/cr/internalid",
)
"""Identifier systems that are the submitting systems' own record ids (OpenCR's ``internalid``
URIs). Duplicates differ on them by nature, so they are never compared."""
