"""``$match``: ``POST Patient/$match`` (FHIR R4, PDQm ITI-119), :func:`match_people`.

The input is scored against the candidates the database blocking index gives, with the
context's matcher (full scores, term-frequency adjusted), and grouped by golden record: a
person's score is that of its best record. Grades and 0..1 scores are those of
:mod:`clientregistry.matching.grades`; ``certainly-not`` marks a person holding a record
recorded as a broken match of the input's own stored record (the input carries its record
id), or whose records all fall below the potential threshold while holding a different
identifier in a system the input also has (another national-id number). Callers allowed to
read demographics get each person's best source record; others get the golden record with
the identifiers of its source records and no demographics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, bad_request, wrong_resource_type
from clientregistry.fhir.patient import check_patient
from clientregistry.matching.classify import Candidate
from clientregistry.matching.grades import (
    Grade,
    identifiers_conflict,
    match_grade_extension,
    only_certain,
    order_key,
    person_grade,
    probability,
    score_grade,
)
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.people import (
    broken_matches,
    patient_identifiers,
    people,
    source_records,
    source_resources,
)
from clientregistry.registry.submit import golden_ids_of
from clientregistry.settings import Settings
from clientregistry.store.blocking_index import DatabaseBlockingIndex
from clientregistry.store.models import SourceRecord

DEFAULT_MATCH_COUNT: Final = 10
MAX_MATCH_COUNT: Final = 100


@dataclass(frozen=True, slots=True)
class MatchRequest:
    """A parsed ``$match`` request."""

    patient: dict[str, Any]
    only_certain: bool = False
    count: int = DEFAULT_MATCH_COUNT


def parse_match_request(
    body: Mapping[str, Any], *, max_count: int = MAX_MATCH_COUNT
) -> MatchRequest:
    """A ``Parameters`` (``resource`` 1..1, ``onlyCertainMatches`` 0..1, ``count`` 0..1) or a
    bare Patient; 400 for anything else (unknown parameters included)."""
    kind = body.get("resourceType")
    if kind == "Patient":
        check_patient(body)
        return MatchRequest(dict(body))
    if kind != "Parameters":
        raise wrong_resource_type("Parameters", kind)
    items = body.get("parameter")
    if not isinstance(items, list) or not items:
        raise bad_request("Parameters.parameter: $match needs a resource", ["Parameters.parameter"])
    patient: dict[str, Any] | None = None
    only = False
    count = DEFAULT_MATCH_COUNT
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad_request(f"{where}: a parameter needs a name", [where])
        name = item["name"]
        if name in seen:
            raise bad_request(f"{where}: {name} may be given only once", [where])
        seen.add(name)
        if name == "resource":
            resource = item.get("resource")
            if not isinstance(resource, dict):
                raise bad_request(f"{where}.resource: expected a Patient", [f"{where}.resource"])
            check_patient(resource, f"{where}.resource")
            patient = dict(resource)
        elif name == "onlyCertainMatches":
            flag = item.get("valueBoolean")
            if not isinstance(flag, bool):
                raise bad_request(
                    f"{where}.valueBoolean: onlyCertainMatches takes a boolean",
                    [f"{where}.valueBoolean"],
                )
            only = flag
        elif name == "count":
            number = item.get("valueInteger")
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise bad_request(
                    f"{where}.valueInteger: count takes a positive integer",
                    [f"{where}.valueInteger"],
                )
            count = min(number, max_count)
        else:
            raise FhirError(
                400,
                "not-supported",
                f"{where}.name: unknown parameter {name!r} "
                "(supported: resource, onlyCertainMatches, count)",
                [f"{where}.name"],
            )
    if patient is None:
        raise bad_request(
            "Parameters.parameter: $match needs a 'resource' (the Patient to match)",
            ["Parameters.parameter"],
            code="required",
        )
    return MatchRequest(patient, only, count)


@dataclass(frozen=True, slots=True)
class PersonMatch:
    """One person (golden record) matched by ``$match``."""

    golden_id: str
    grade: Grade
    score: float
    """0..1, see :func:`clientregistry.matching.grades.probability` (0 for certainly-not)."""
    record_id: str
    """The person's best-scoring source record."""
    raw_score: float
    rule_set: str


def _own_records(session: Session, settings: Settings, patient: Mapping[str, Any]) -> set[str]:
    """Stored records the input names by their record ids (its own record, if stored)."""
    systems = set(settings.record_id_systems)
    pairs = [
        (i["system"], i["value"]) for i in patient_identifiers(patient) if i["system"] in systems
    ]
    if not pairs:
        return set()
    condition = or_(
        *(
            and_(SourceRecord.internal_system == s, SourceRecord.internal_value == v)
            for s, v in pairs
        )
    )
    return set(session.scalars(select(SourceRecord.id).where(condition)))


def match_people(
    session: Session, context: RegistryContext, patient: Mapping[str, Any]
) -> list[PersonMatch]:
    """Every person the Patient may be, most likely first (see the module docstring)."""
    matcher = context.matcher
    rules = matcher.rules
    features = matcher.extractor.extract(patient)
    keys = matcher.blocker.keys(features)
    if not keys:
        return []
    found = DatabaseBlockingIndex(session).candidates(keys, matcher.candidate_limit)
    if not found.ids:
        return []
    rows = session.execute(
        select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.features).where(
            SourceRecord.id.in_(found.ids)
        )
    ).all()
    stored = [(rid, golden, feats) for rid, golden, feats in rows if golden is not None]
    features_of = {rid: feats for rid, _, feats in stored}
    scored = matcher.candidates(features, stored, context.term_counts.tf, keep_none=True)
    by_person: dict[str, list[Candidate]] = {}
    for candidate in scored:  # strongest first
        by_person.setdefault(str(candidate.golden_id), []).append(candidate)
    own = _own_records(session, context.settings, patient)
    broken = set().union(*broken_matches(session, own).values()) if own else set()
    own_people = golden_ids_of(session, own)
    broken_people = golden_ids_of(session, broken) - own_people
    id_slots = sorted(
        {
            matcher.extractor.slot(f)
            for rs in rules.rule_sets
            for f in rs.fields
            if f.is_identifier_set
        }
    )
    out = []
    for golden_id, candidates in by_person.items():
        best = candidates[0]
        rule_set = rules.rule_sets[best.score.rule_set]
        conflict = any(
            identifiers_conflict(
                _id_set(features[slot]),
                frozenset().union(
                    *(_id_set(features_of[str(c.record_id)][slot]) for c in candidates)
                ),
            )
            for slot in id_slots
        )
        grade = person_grade(
            score_grade(best.score.score, rule_set),
            known_non_match=golden_id in broken_people,
            conflicting_identifier=conflict,
        )
        if grade is None:
            continue
        out.append(
            PersonMatch(
                golden_id=golden_id,
                grade=grade,
                score=0.0 if grade == "certainly-not" else probability(best.score.score, rule_set),
                record_id=str(best.record_id),
                raw_score=best.score.score,
                rule_set=rule_set.name,
            )
        )
    out.sort(key=lambda m: (*order_key(m.grade, m.score), m.golden_id))
    return out


def _id_set(value: Any) -> frozenset[str]:
    return value if isinstance(value, frozenset) else frozenset()


def select_matches(matches: Sequence[PersonMatch], request: MatchRequest) -> list[PersonMatch]:
    """What the response holds: ``count`` best, or with ``onlyCertainMatches`` the one certain
    match (none when zero or several people are certain)."""
    if request.only_certain:
        index = only_certain([m.grade for m in matches])
        return [] if index is None else [matches[index]]
    return list(matches[: request.count])


def match_bundle(
    session: Session,
    settings: Settings,
    matches: Sequence[PersonMatch],
    *,
    demographics: bool,
    base: str,
) -> dict[str, Any]:
    """The ``searchset`` Bundle of ``matches`` (already selected and ordered).

    ``demographics``: each entry is the person's best source record; otherwise the golden
    record with its source records' identifiers.
    """
    entries = []
    if demographics:
        ids = [m.record_id for m in matches]
        records = source_records(session, [SourceRecord.id.in_(ids)]) if ids else []
        by_id = dict(
            zip([r.id for r in records], source_resources(session, settings, records), strict=True)
        )
        resources = [by_id[m.record_id] for m in matches]
    else:
        found = people(session, [m.golden_id for m in matches])
        resources = [found[m.golden_id].resource(with_identifiers=True) for m in matches]
    for m, resource in zip(matches, resources, strict=True):
        entries.append(
            {
                "fullUrl": f"{base}/Patient/{resource['id']}",
                "resource": resource,
                "search": {
                    "extension": [match_grade_extension(m.grade)],
                    "mode": "match",
                    "score": round(m.score, 4),
                },
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/Patient/$match"}],
    }
    if entries:
        bundle["entry"] = entries
    return bundle


__all__ = [
    "DEFAULT_MATCH_COUNT",
    "MAX_MATCH_COUNT",
    "MatchRequest",
    "PersonMatch",
    "match_bundle",
    "match_people",
    "parse_match_request",
    "select_matches",
]
