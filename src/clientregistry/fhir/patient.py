"""Patient resources on the wire: parsing what clients send, building what the registry stores.

Parsing keeps the client's JSON exactly as sent (no round trip through a model), after checking
it against FHIR R4. Building makes OpenCR's two shapes:

* a *source record*: the submitted Patient with registry-owned elements removed, plus the client
  tag, match tags, broken-match extensions and ``link`` ``refer`` to its golden record;
* a *golden record* (CRUID): a Patient with no demographics, the golden-record tag and ``link``
  ``seealso`` to each source record (``replaced-by`` once another golden record took over).

Both follow the PDQm Patient profile's link rules: a resource with a ``link`` carries
``active``. A source record subsumed by another (Resolve Duplicate, ``$merge``) is served
``active: false`` with a ``replaced-by`` link to the survivor, which links back with
``replaces``; a golden record is active unless it was retired (``replaced-by``).

:func:`identifiers_only` is the view of a caller that may not read demographics: ids,
identifiers, links, ``active`` and tags, marked ``SUBSETTED``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fhir.resources.R4B.patient import Patient

from clientregistry.fhir.codes import (
    BROKEN_MATCH_EXTENSION,
    GOLDEN_RECORD_TAG,
    REGISTRY_EXTENSIONS,
    SUBSETTED_TAG,
    client_tag,
    coding,
    is_registry_tag,
)
from clientregistry.fhir.datatypes import instant, patient_reference
from clientregistry.fhir.errors import (
    FhirError,
    Issue,
    bad_request,
    business_rule,
    invalid_resource,
    missing_internal_identifier,
    wrong_resource_type,
)
from clientregistry.fhir.json_body import load_object
from clientregistry.fhir.validation import validate_resource

DEFAULT_MAX_BYTES = 1 << 20
"""A sensible default body limit (1 MiB) for a single Patient."""


def _contact_issues(resource: Mapping[str, Any], root: str) -> list[Issue]:
    """pat-1: a contact needs a name, telecom, address or organization."""
    contacts = resource.get("contact")
    if not isinstance(contacts, list):
        return []
    issues = []
    for i, contact in enumerate(contacts):
        if isinstance(contact, dict) and not any(
            k in contact for k in ("name", "telecom", "address", "organization")
        ):
            where = f"{root}.contact[{i}]"
            issues.append(
                Issue(
                    "invariant",
                    f"{where}: a contact needs a name, telecom, address or organization (pat-1)",
                    (where,),
                )
            )
    return issues


def _modifier_issues(value: Any, where: str) -> list[Issue]:
    """``modifierExtension`` anywhere, and ``implicitRules``: they change what the Patient
    means, in ways this registry does not know, so it must not take it (FHIR R4 §2.6.2;
    the PDQm Patient profile forbids both)."""
    issues = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Mapping):
            for key, child in item.items():
                place = f"{path}.{key}"
                if key == "modifierExtension":
                    urls = [e.get("url") for e in child if isinstance(e, Mapping)]
                    issues.append(
                        Issue(
                            "extension",
                            f"{place}: modifier extensions are not understood here ({urls}); "
                            "send the Patient without them",
                            (place,),
                        )
                    )
                elif key == "implicitRules" and path == where:
                    issues.append(
                        Issue(
                            "extension",
                            f"{place}: implicit rules are not understood here",
                            (place,),
                        )
                    )
                else:
                    stack.append((child, place))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return issues


MAX_IDENTIFIER_LENGTH = 255
"""Longest ``identifier.system`` and ``identifier.value`` the registry stores."""
BIRTH_DATE_SLACK = timedelta(hours=14)
"""A birth date is in the future once it is after today in every time zone (UTC+14)."""


def _nul_issues(value: Any, where: str) -> list[Issue]:
    """Any string (or property name) holding a NUL character: PostgreSQL cannot store one,
    SQLite can, so it is refused on both."""
    if b"\\u0000" not in orjson.dumps(value):
        return []  # the common case: one fast pass in C instead of a walk in Python
    issues = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                issues.append(Issue("invalid", f"{path}: a NUL character is not allowed", (path,)))
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if "\x00" in key:
                    message = f"{path}: a property name holds a NUL character"
                    issues.append(Issue("invalid", message, (path,)))
                else:
                    stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return issues


def _storable_issues(resource: Mapping[str, Any], root: str, today: date | None) -> list[Issue]:
    """What FHIR allows but the registry must refuse: identifiers longer than it stores, a
    birth date in the future."""
    issues = []
    identifiers = resource.get("identifier")
    for i, entry in enumerate(identifiers if isinstance(identifiers, list) else ()):
        for key in ("system", "value"):
            text = entry.get(key) if isinstance(entry, Mapping) else None
            if isinstance(text, str) and len(text) > MAX_IDENTIFIER_LENGTH:
                where = f"{root}.identifier[{i}].{key}"
                message = (
                    f"{where} has {len(text)} characters; at most {MAX_IDENTIFIER_LENGTH}"
                    " are accepted"
                )
                issues.append(Issue("too-long", message, (where,)))
    birth = resource.get("birthDate")
    if isinstance(birth, str):
        latest = today or (datetime.now(UTC) + BIRTH_DATE_SLACK).date()
        parts = birth.split("-")
        try:
            first_day = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, 1)
            first_day = first_day.replace(day=int(parts[2])) if len(parts) > 2 else first_day
        except (ValueError, IndexError):
            first_day = None  # (the FHIR check names a malformed date)
        if first_day is not None and first_day > latest:
            where = f"{root}.birthDate"
            message = f"{where} {birth} is in the future (today is {latest.isoformat()})"
            issues.append(Issue("invalid", message, (where,)))
    return issues


def patient_issues(
    resource: Mapping[str, Any], root: str = "Patient", *, today: date | None = None
) -> list[Issue]:
    """Every FHIR R4 problem of a Patient (``resourceType`` already checked), under ``root``
    — and any modifier extension or implicit rules, which the registry cannot honour, NUL
    characters, identifiers over :data:`MAX_IDENTIFIER_LENGTH` characters and a birth date
    after ``today`` (by default today somewhere on Earth)."""
    issues = validate_resource(resource, Patient, root) + _contact_issues(resource, root)
    placed = {e for issue in issues for e in issue.expression}
    extra = (
        _modifier_issues(resource, root)
        + _nul_issues(resource, root)
        + _storable_issues(resource, root, today)
    )
    return issues + [i for i in extra if i.expression[0] not in placed]


def check_patient(resource: Mapping[str, Any], root: str = "Patient") -> None:
    """Raise :class:`FhirError` (400) unless ``resource`` is a valid FHIR R4 Patient."""
    found = resource.get("resourceType")
    if found != "Patient":
        raise wrong_resource_type("Patient", found, root if root != "Patient" else "")
    issues = patient_issues(resource, root)
    if issues:
        raise invalid_resource(issues, "Patient")


def parse_patient(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """The Patient in a request body, exactly as sent, once it is known to be valid FHIR R4.

    Raises :class:`FhirError`: 413 ``too-costly`` over ``max_bytes``; 400 ``structure`` for
    malformed JSON (with line and column) or a body that is not an object; 400 ``invalid`` for
    another ``resourceType`` (naming it) or a Patient that breaks FHIR R4 (one issue per
    problem, each with its FHIRPath expression).
    """
    resource = load_object(body, max_bytes=max_bytes)
    check_patient(resource)
    return resource


def require_id(patient: Mapping[str, Any], url_id: str) -> None:
    """``PUT Patient/{id}``: the body's ``id`` must be there and equal ``url_id`` (400)."""
    body_id = patient.get("id")
    if body_id is None:
        raise bad_request(f"The Patient has no id; it must be {url_id!r}", ["Patient.id"])
    if body_id != url_id:
        raise bad_request(
            f"The Patient's id {body_id!r} differs from the id in the URL {url_id!r}",
            ["Patient.id"],
        )


def internal_identifier(
    patient: Mapping[str, Any], systems: Collection[str]
) -> tuple[str, str] | None:
    """The caller's own record id: ``(system, value)`` of the identifier in ``systems``.

    None when there is none. Two *different* values in the caller's systems are ambiguous
    (which record is being updated?) and raise 422 ``business-rule``.
    """
    found: tuple[str, str] | None = None
    for entry in patient.get("identifier") or ():
        if not isinstance(entry, Mapping):
            continue
        system, value = entry.get("system"), entry.get("value")
        if not (isinstance(system, str) and system in systems and isinstance(value, str)):
            continue
        if not value:
            continue
        if found is not None and found != (system, value):
            raise business_rule(
                f"The Patient has several identifiers in the client's own systems "
                f"({found[0]}|{found[1]} and {system}|{value}); send one",
                ["Patient.identifier"],
            )
        found = (system, value)
    return found


def require_internal_identifier(
    patient: Mapping[str, Any], systems: Collection[str]
) -> tuple[str, str]:
    """Like :func:`internal_identifier`, but raises 422 ``business-rule`` when there is none."""
    found = internal_identifier(patient, systems)
    if found is None:
        raise missing_internal_identifier(systems)
    return found


_PATIENT_REFERENCE = re.compile(r"(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True, slots=True)
class SurvivorReference:
    """The surviving Patient a ``replaced-by`` link names: by id (``Patient/<id>``, possibly
    absolute) or by identifier (``system|value``)."""

    id: str | None = None
    system: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        return f"Patient/{self.id}" if self.id is not None else f"{self.system}|{self.value}"


def replaced_by_link(patient: Mapping[str, Any]) -> SurvivorReference | None:
    """The surviving Patient of a Resolve Duplicate (ITI-104): the one ``link`` of type
    ``replaced-by`` (None without one). 422 for several, or for one that names no Patient
    (by ``reference`` or by an ``identifier`` with system and value)."""
    links = [
        link
        for link in patient.get("link") or ()
        if isinstance(link, Mapping) and link.get("type") == "replaced-by"
    ]
    if not links:
        return None
    where = "Patient.link"
    if len(links) > 1:
        raise business_rule("A Patient can be replaced by one Patient only", [where])
    other = links[0].get("other")
    other = other if isinstance(other, Mapping) else {}
    reference = other.get("reference")
    if isinstance(reference, str):
        found = _PATIENT_REFERENCE.fullmatch(reference)
        if found is None:
            raise business_rule(
                f"The replaced-by link must name a Patient (Patient/<id>), not {reference!r}",
                [f"{where}.other.reference"],
            )
        return SurvivorReference(id=found.group(1))
    identifier = other.get("identifier")
    if isinstance(identifier, Mapping):
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and isinstance(value, str) and system and value:
            return SurvivorReference(system=system, value=value)
    raise business_rule(
        "The replaced-by link must name the surviving Patient by reference or by an "
        "identifier with a system and a value",
        [f"{where}.other"],
    )


def strip_registry_elements(patient: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``patient`` without what only the registry may set.

    Removed: ``link``; ``meta.versionId`` and ``meta.lastUpdated``; the client, match and
    golden-record tags; the broken-match extension. ``meta`` and ``extension`` disappear when
    nothing else is left in them. The input is not changed.
    """
    out = copy.deepcopy(dict(patient))
    out.pop("link", None)
    meta = out.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        tags = meta.get("tag")
        if isinstance(tags, list):
            kept = [t for t in tags if not (isinstance(t, Mapping) and is_registry_tag(t))]
            if kept:
                meta["tag"] = kept
            else:
                del meta["tag"]
        if not meta:
            del out["meta"]
    extensions = out.get("extension")
    if isinstance(extensions, list):
        kept_ext = [
            e
            for e in extensions
            if not (isinstance(e, Mapping) and e.get("url") in REGISTRY_EXTENSIONS)
        ]
        if kept_ext:
            out["extension"] = kept_ext
        else:
            del out["extension"]
    return out


def _meta(
    version: str | int,
    last_updated: datetime,
    tags: list[dict[str, Any]],
    rest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"versionId": str(version), "lastUpdated": instant(last_updated)}
    if rest:
        meta.update((k, v) for k, v in rest.items() if k != "tag")
    if tags:
        meta["tag"] = tags
    return meta


def source_record_resource(
    patient: Mapping[str, Any],
    id: str,
    version: str | int,
    last_updated: datetime,
    client_system: str,
    client_display: str | None,
    golden_id: str | None,
    match_tags: Iterable[Mapping[str, str]] = (),
    *,
    broken_matches: Iterable[str] = (),
    replaced_by: str | None = None,
    replaces: Iterable[str] = (),
) -> dict[str, Any]:
    """The stored/served form of a source record, OpenCR-shaped.

    ``client_system`` is the client id (the tag's code, e.g. ``openmrs``, the certificate CN)
    and ``client_display`` its name. ``match_tags`` are constants from
    :mod:`clientregistry.fhir.codes` (``AUTOMATCH_TAG`` ...). ``broken_matches`` are ids (or
    ``Patient/<id>`` references) of records known *not* to be this person. ``golden_id``
    None leaves out ``link`` (not matched yet). ``replaced_by`` is the source record that
    subsumed this one (served ``active: false``); ``replaces`` those it subsumed. A record
    with links that did not say ``active`` is served ``active: true`` (PDQm: a linked
    Patient carries ``active``).
    """
    body = strip_registry_elements(patient)
    body.pop("resourceType", None)
    body.pop("id", None)
    client_meta = body.pop("meta", {})
    tags = [client_tag(client_system, client_display)]
    tags += [coding(t) for t in match_tags]
    tags += client_meta.get("tag", [])
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id,
        "meta": _meta(version, last_updated, tags, client_meta),
    }
    out.update(body)
    broken = [
        {"url": BROKEN_MATCH_EXTENSION, "valueReference": {"reference": patient_reference(b)}}
        for b in broken_matches
    ]
    if broken:
        out["extension"] = [*out.get("extension", []), *broken]
    links = []
    if golden_id is not None:
        links.append({"other": {"reference": patient_reference(golden_id)}, "type": "refer"})
    if replaced_by is not None:
        survivor = {"reference": patient_reference(replaced_by)}
        links.append({"other": survivor, "type": "replaced-by"})
        out["active"] = False
    links += [{"other": {"reference": patient_reference(r)}, "type": "replaces"} for r in replaces]
    if links:
        out["link"] = links
        out.setdefault("active", True)
    return out


_IDENTIFIER_VIEW = ("resourceType", "id", "identifier", "active", "link")


def identifiers_only(resource: Mapping[str, Any]) -> dict[str, Any]:
    """``resource`` as a caller that may not read demographics sees it: its id, identifiers,
    ``active``, links, version and tags (marked ``SUBSETTED``); no names, dates, addresses,
    telecom, extensions or anything else."""
    out: dict[str, Any] = {k: resource[k] for k in _IDENTIFIER_VIEW[:2] if k in resource}
    meta = resource.get("meta")
    if isinstance(meta, Mapping):
        kept = {k: meta[k] for k in ("versionId", "lastUpdated") if k in meta}
        tags = [t for t in meta.get("tag") or () if t != SUBSETTED_TAG]
        kept["tag"] = [*tags, coding(SUBSETTED_TAG)]
        out["meta"] = kept
    out.update((k, resource[k]) for k in _IDENTIFIER_VIEW[2:] if k in resource)
    return out


def golden_record_resource(
    id: str,
    version: str | int,
    last_updated: datetime,
    source_ids: Iterable[str],
    replaced_by: str | None = None,
    *,
    active: bool = True,
) -> dict[str, Any]:
    """A golden record (CRUID): no demographics, the golden-record tag, ``active`` (false
    once retired), ``link`` ``seealso`` to each source record, and ``replaced-by`` to
    ``replaced_by`` once it has been emptied."""
    links = [{"other": {"reference": patient_reference(s)}, "type": "seealso"} for s in source_ids]
    if replaced_by is not None:
        links.append(
            {"other": {"reference": patient_reference(replaced_by)}, "type": "replaced-by"}
        )
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id,
        "meta": _meta(version, last_updated, [coding(GOLDEN_RECORD_TAG)]),
        "active": active and replaced_by is None,
    }
    if links:
        out["link"] = links
    return out


__all__ = [
    "DEFAULT_MAX_BYTES",
    "FhirError",
    "SurvivorReference",
    "check_patient",
    "golden_record_resource",
    "identifiers_only",
    "internal_identifier",
    "parse_patient",
    "patient_issues",
    "replaced_by_link",
    "require_id",
    "require_internal_identifier",
    "source_record_resource",
    "strip_registry_elements",
]
