"""PIXm identifier cross-references: ``GET Patient/$ihe-pix`` (ITI-83), :func:`cross_reference`.

*Known identifier systems* are the configured client systems' internal id systems plus every
identifier system present on a stored record. An unknown ``sourceIdentifier`` system is 400
``code-invalid``, an unknown ``targetSystem`` 403 ``code-invalid``, a known system with an
unknown value 404 ``not-found`` (IHE's three cases, checked in that order). The person is
every golden record holding a source record with the source identifier (an internal id
system is looked up by the record-id index; any other system through the ``search_token``
index of identifier values, then an exact check). The answer is a ``Parameters`` with, per
person, a ``targetId`` to the golden record ``Patient/<cruid>``, then for each linked source
record a ``targetId`` ``Patient/<id>`` followed by the ``targetIdentifier`` of each of its
identifiers. The source identifier itself is never returned (other identifiers of the same
system are: a second record in that domain); the record whose own record id is the source
identifier gets no ``targetId`` (it is the caller's own Patient). With ``targetSystem``, only
identifiers of those systems are returned, and only the source records holding one get a
``targetId``. A record subsumed by another (Resolve Duplicate, ``$merge``) is the survivor's
person: its identifier answers that person, and it is never returned itself (ITI-104: the
subsumed identifier is replaced by the survivor's).

As callers send it: ``targetSystem`` repeated or comma-joined (the OpenMRS client-registry
module joins them with commas); the patient-id form of ``sourceIdentifier`` (ITI-83
§2:3.83.4.1.2.1), ``<FHIR base URL>|Patient/<id>``, names a record (or a golden record) by its
logical id; ``targetSystem=<FHIR base URL>`` asks for logical ids, returned as
``targetIdentifier`` ``<base>|Patient/<id>`` beside each ``targetId``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, bad_request
from clientregistry.fhir.search_params import not_supported, parse_format, parse_tokens
from clientregistry.registry.people import (
    Stored,
    patient_identifiers,
    people,
    source_records,
    stream_records,
)
from clientregistry.registry.search_tokens import IDENTIFIER, IDENTIFIER_SYSTEM
from clientregistry.registry.token_index import token_equals
from clientregistry.settings import Settings
from clientregistry.store.models import SourceRecord


@dataclass(frozen=True, slots=True)
class PixQuery:
    """A parsed ``$ihe-pix`` query."""

    system: str
    value: str
    targets: tuple[str, ...] = ()


def parse_pix_query(pairs: Iterable[tuple[str, str]]) -> PixQuery:
    """``sourceIdentifier=system|value`` (exactly one, both parts), ``targetSystem`` (0..*),
    ``_format``; anything else is 400."""
    sources: list[str] = []
    targets: list[str] = []
    for name, value in pairs:
        if name == "sourceIdentifier":
            sources.append(value)
        elif name == "targetSystem":
            for target in value.split(","):
                if not target.strip():
                    raise bad_request(f"targetSystem={value!r}: an empty system")
                if target.strip() not in targets:
                    targets.append(target.strip())
        elif name == "_format":
            parse_format(value)
        else:
            raise not_supported(
                f"Unknown parameter {name!r} (supported: sourceIdentifier, targetSystem, _format)"
            )
    if len(sources) != 1:
        what = "is required" if not sources else "must be given exactly once"
        raise bad_request(f"sourceIdentifier {what}", code="required" if not sources else "invalid")
    tokens = parse_tokens(sources[0], name="sourceIdentifier")
    if len(tokens) != 1 or not tokens[0].system or not tokens[0].code:
        raise bad_request(
            f"sourceIdentifier={sources[0]!r}: expected one identifier, system|value "
            "(escape a '|' or ',' in the value with '\\')"
        )
    return PixQuery(tokens[0].system, tokens[0].code, tuple(targets))


def identifier_system_known(session: Session, settings: Settings, system: str) -> bool:
    """Whether ``system`` is a known identifier system (see the module docstring)."""
    if system in settings.record_id_systems or _is_base(settings, system):
        return True
    return any(
        any(i["system"] == system for i in patient_identifiers(record.resource))
        for record in stream_records(session, [token_equals(IDENTIFIER_SYSTEM, [system])])
    )


def _is_base(settings: Settings, system: str) -> bool:
    """``system`` is this server's FHIR base URL: the domain of its logical ids."""
    return system.rstrip("/") == settings.fhir_base


def records_with_identifier(
    session: Session, settings: Settings, system: str, value: str
) -> list[Stored]:
    """Source records holding the identifier ``system|value``."""
    if _is_base(settings, system):
        record_id = value.removeprefix("Patient/")
        return source_records(session, [SourceRecord.id == record_id]) if record_id else []
    if system in settings.record_id_systems:
        return source_records(
            session,
            [SourceRecord.internal_system == system, SourceRecord.internal_value == value],
        )
    found = stream_records(session, [token_equals(IDENTIFIER, [value])])
    held = [
        r
        for r in found
        if any(
            i["system"] == system and i["value"] == value for i in patient_identifiers(r.resource)
        )
    ]
    return sorted(held, key=lambda r: r.id)


@dataclass(frozen=True, slots=True)
class PixResult:
    parameters: dict[str, Any]
    golden_ids: tuple[str, ...]


def _parameter(name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, f"value{kind}": value}


def cross_reference(session: Session, settings: Settings, query: PixQuery) -> PixResult:
    """ITI-83: the identifiers and Patients of the person with ``query``'s source identifier."""
    if not identifier_system_known(session, settings, query.system):
        raise FhirError(400, "code-invalid", "sourceIdentifier Assigning Authority not found")
    for target in query.targets:
        if not identifier_system_known(session, settings, target):
            raise FhirError(403, "code-invalid", "targetSystem not found")
    holders = records_with_identifier(session, settings, query.system, query.value)
    golden_ids = sorted({r.golden_id for r in holders if r.golden_id is not None})
    if not golden_ids and _is_base(settings, query.system):
        golden_ids = sorted(people(session, [query.value.removeprefix("Patient/")]))
    if not golden_ids:
        raise FhirError(404, "not-found", "sourceIdentifier Patient Identifier not found")
    targets = {settings.fhir_base if _is_base(settings, t) else t for t in query.targets}
    logical = settings.fhir_base in targets
    source = (query.system, query.value)
    if _is_base(settings, query.system):  # the caller named a record by its logical id
        source = (settings.fhir_base, f"Patient/{query.value.removeprefix('Patient/')}")
    parameters: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    found = people(session, golden_ids)
    for golden_id in golden_ids:
        person = found[golden_id]
        parameters.append(
            _parameter("targetId", "Reference", {"reference": f"Patient/{golden_id}"})
        )
        for member in person.members:
            if member.replaced_by is not None:
                continue
            returned = []
            own_id = {"system": settings.fhir_base, "value": f"Patient/{member.id}"}
            own = source in {
                (member.internal_system, member.internal_value),
                (own_id["system"], own_id["value"]),
            }
            named = [own_id] if logical and not own else []
            for ident in [*patient_identifiers(member.resource), *named]:
                key = (ident["system"], ident["value"])
                if key == source or key in seen or (targets and key[0] not in targets):
                    continue
                seen.add(key)
                returned.append(ident)
            if not own and (returned or not targets):
                reference = {"reference": f"Patient/{member.id}"}
                parameters.append(_parameter("targetId", "Reference", reference))
            parameters.extend(_parameter("targetIdentifier", "Identifier", i) for i in returned)
    return PixResult({"resourceType": "Parameters", "parameter": parameters}, tuple(golden_ids))


__all__ = [
    "PixQuery",
    "PixResult",
    "cross_reference",
    "identifier_system_known",
    "parse_pix_query",
    "records_with_identifier",
]
