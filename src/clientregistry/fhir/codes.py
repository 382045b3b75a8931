"""The URIs and codes OpenCR puts on its Patient resources, kept here so every layer agrees.

The values are OpenCR's own (see ``shared/reference/OPENCR.md``) so that existing OpenCR
integrations keep working: the golden-record tag has *no* system, only a code and display.
Tag constants are read-only mappings; builders copy them with :func:`coding` before putting
them in a resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

FHIR_VERSION: Final = "4.0.1"
FHIR_JSON: Final = "application/fhir+json"
FHIR_XML: Final = "application/fhir+xml"

CLIENT_ID_SYSTEM: Final = "http://openclientregistry.org/fhir/clientid"
"""System of the tag naming the client (point-of-service system) that sent a source record."""

AUTOMATCH_SYSTEM: Final = "http://openclientregistry.org/fhir/automatch"
MATCH_ISSUES_SYSTEM: Final = "http://openclientregistry.org/fhir/matchIssues"
HUMAN_ADJUDICATION_SYSTEM: Final = "http://openclientregistry.org/fhir/humanAdjudication"

GOLDEN_RECORD_CODE: Final = "5c827da5-4858-4f3d-a50c-62ece001efea"

BROKEN_MATCH_EXTENSION: Final = "http://clientregistry.org/brokenMatch"
"""Extension (valueReference to the other record) marking two records as *not* the same person."""

CRUID_EXTENSION: Final = "http://openclientregistry.org/fhir/StructureDefinition/cruid"
"""Extension (valueReference ``Patient/<golden id>``) this registry puts on
``Bundle.entry.response`` of batch/transaction responses: the golden record (CRUID) of the
entry's source record. It is the per-entry form of OpenCR's ``LocationCRUID`` header."""


def _tag(system: str | None, code: str, display: str | None = None) -> Mapping[str, str]:
    tag: dict[str, str] = {}
    if system is not None:
        tag["system"] = system
    tag["code"] = code
    if display is not None:
        tag["display"] = display
    return MappingProxyType(tag)


GOLDEN_RECORD_TAG: Final = _tag(None, GOLDEN_RECORD_CODE, "Golden Record")
AUTOMATCH_TAG: Final = _tag(AUTOMATCH_SYSTEM, "autoMatches")
POTENTIAL_MATCH_TAG: Final = _tag(MATCH_ISSUES_SYSTEM, "potentialMatches")
CONFLICT_MATCH_TAG: Final = _tag(MATCH_ISSUES_SYSTEM, "conflictMatches")
HUMAN_ADJUDICATION_TAG: Final = _tag(HUMAN_ADJUDICATION_SYSTEM, "humanAdjudication")

SUBSETTED_TAG: Final = _tag(
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED", "subsetted"
)
"""Marks a resource served with elements left out (``_elements``, or a caller who may not read
demographics): FHIR's ``SUBSETTED`` tag."""

MATCH_TAGS: Final = (AUTOMATCH_TAG, POTENTIAL_MATCH_TAG, CONFLICT_MATCH_TAG, HUMAN_ADJUDICATION_TAG)

REGISTRY_TAG_SYSTEMS: Final = frozenset(
    {CLIENT_ID_SYSTEM, AUTOMATCH_SYSTEM, MATCH_ISSUES_SYSTEM, HUMAN_ADJUDICATION_SYSTEM}
)
"""Tag systems only the registry may set; they are removed from what a client submits."""

REGISTRY_EXTENSIONS: Final = frozenset({BROKEN_MATCH_EXTENSION})
"""Extensions only the registry may set; they are removed from what a client submits."""

# restful-security-service: how clients authenticate (mutual TLS with client certificates).
SECURITY_SERVICE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/restful-security-service"
RESTFUL_INTERACTION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/restful-interaction"
DICOM_SYSTEM: Final = "http://dicom.nema.org/resources/ontology/DCM"
IHE_EVENT_TYPE_SYSTEM: Final = "urn:ihe:event-type-code"


def coding(tag: Mapping[str, str]) -> dict[str, str]:
    """A fresh, mutable copy of a tag constant, ready to put in a resource."""
    return dict(tag)


def client_tag(client_id: str, client_name: str | None = None) -> dict[str, str]:
    """The tag naming the client that sent a source record (code = certificate CN)."""
    return coding(_tag(CLIENT_ID_SYSTEM, client_id, client_name))


def is_registry_tag(tag: Mapping[str, Any]) -> bool:
    """True for a tag only the registry sets (client id, match results, golden record)."""
    if tag.get("system") in REGISTRY_TAG_SYSTEMS:
        return True
    return "system" not in tag and tag.get("code") == GOLDEN_RECORD_CODE


def is_golden_record(resource: Mapping[str, Any]) -> bool:
    """True when ``resource`` carries the golden-record tag (OpenCR's CRUID records)."""
    meta = resource.get("meta")
    if not isinstance(meta, Mapping):
        return False
    tags = meta.get("tag")
    if not isinstance(tags, list):
        return False
    return any(
        isinstance(t, Mapping) and "system" not in t and t.get("code") == GOLDEN_RECORD_CODE
        for t in tags
    )
