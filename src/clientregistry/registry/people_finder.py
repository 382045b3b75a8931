"""Finding people: by name (fuzzy), birth date, gender, an identifier (system and value), a
CRUID or record id, and the source system — a page of persons (golden records), each with
how many source records it holds and from which systems.

Two ways, chosen by the criteria:

* **In SQL** when every criterion is exact in the database: birth date (``YYYY``,
  ``YYYY-MM`` or ``YYYY-MM-DD``, a range of the ``search_token`` index), an identifier value
  without a system (the index), the source system (a column). Persons come in CRUID order,
  counted exactly, a page read with ``LIMIT``/``OFFSET``.
* **In Python** otherwise (a name, a gender, an identifier with its system): the index
  narrows the candidates — for a name, the records with a name word starting with the first
  three letters of a word searched for — at most :data:`MAX_CANDIDATES` of them, which are
  then checked exactly (the Patient search's own test, :mod:`.search_query`) and, for a name,
  scored: each word searched for against the record's closest name word (Jaro-Winkler on
  case- and accent-folded words), averaged; a record scoring at least :data:`NAME_THRESHOLD`
  matches, and persons come best first. When the candidates were cut short the page says so
  (``capped``): a narrower search finds the rest.

A gender alone is refused (it would list half the registry); it narrows other criteria.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from pydantic import BaseModel, Field
from rapidfuzz.distance import JaroWinkler
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError
from clientregistry.registry.actor import Actor, Reading, Refused, audit_read
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.people import Stored, people, source_records
from clientregistry.registry.review import person_name
from clientregistry.registry.search_prefilter import prefilter
from clientregistry.registry.search_query import (
    PatientQuery,
    parse_patient_query,
    patient_matches,
)
from clientregistry.registry.search_tokens import folded, string_values
from clientregistry.registry.token_index import token_prefix
from clientregistry.store.db import transaction
from clientregistry.store.models import GoldenRecord, SourceRecord

MAX_CANDIDATES: Final = 3000
"""Most source records checked in Python for one search."""
NAME_THRESHOLD: Final = 0.85
"""The least average similarity of the words searched for to a record's name words."""
PREFIX: Final = 3
"""Letters of each word searched for that a candidate's name word must start with."""
MAX_VALUE: Final = 200
GENDERS: Final = ("male", "female", "other", "unknown")
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


@dataclass(frozen=True, slots=True)
class PeopleQuery:
    """What to look for; every criterion given must hold (of one source record)."""

    name: str | None = None
    birth_date: str | None = None
    gender: str | None = None
    identifier: str | None = None
    """An identifier value."""
    identifier_system: str | None = None
    cruid: str | None = None
    """A golden record's id, or a source record's (its person is found)."""
    system: str | None = None
    """The client system that submitted a record."""

    def given(self) -> dict[str, str]:
        """The criteria given (blank ones left out)."""
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str) and value.strip():
                out[item.name] = value.strip()
        return out


class PersonHit(BaseModel):
    """A person found: the golden record, in a few words."""

    golden_id: str
    name: str | None = Field(description="A name from its source records")
    birth_date: str | None
    gender: str | None
    records: int = Field(description="How many source records it holds")
    systems: list[str] = Field(description="The client systems those records came from")
    score: float | None = Field(description="How close the name is (name searches), 0-1")


class PeoplePage(BaseModel):
    items: list[PersonHit]
    offset: int
    limit: int
    total: int = Field(description="Persons found (of the candidates checked, when capped)")
    capped: bool = Field(description="Too many candidates: not every record was checked")


def _refuse(message: str, code: str = "bad-search") -> Refused:
    return Refused(400, message, code=code)


def _checked(query: PeopleQuery, context: RegistryContext) -> dict[str, str]:
    given = query.given()
    for key, value in given.items():
        if len(value) > MAX_VALUE:
            raise _refuse(f"{key}: at most {MAX_VALUE} characters", "too-long")
    if "birth_date" in given and not _DATE.fullmatch(given["birth_date"]):
        raise _refuse("birth_date: give YYYY, YYYY-MM or YYYY-MM-DD", "bad-date")
    if "gender" in given and given["gender"] not in GENDERS:
        raise _refuse(f"gender: one of {', '.join(GENDERS)}", "bad-gender")
    if "system" in given and given["system"] not in context.settings.systems:
        raise _refuse(f"system: no client system named {given['system']!r}", "bad-system")
    if "identifier_system" in given and "identifier" not in given:
        raise _refuse("identifier_system goes with an identifier value", "bad-identifier")
    if set(given) == {"gender"}:
        raise _refuse("a gender alone finds half the registry: add another criterion", "gender")
    return given


def _patient_query(given: dict[str, str]) -> PatientQuery:
    """The exact test of the Patient search for birth date, gender and identifier."""
    pairs: list[tuple[str, str]] = []
    if "birth_date" in given:
        pairs.append(("birthdate", given["birth_date"]))
    if "gender" in given:
        pairs.append(("gender", given["gender"]))
    if "identifier" in given:
        value = given["identifier"].replace("\\", "\\\\").replace("|", "\\|")
        value = value.replace(",", "\\,").replace("$", "\\$")
        system = given.get("identifier_system", "").replace("|", "\\|")
        pairs.append(("identifier", f"{system}|{value}" if system else value))
    try:
        return parse_patient_query(pairs)
    except FhirError as error:
        raise _refuse(error.diagnostics) from None


def _words(text: str) -> list[str]:
    return [w for w in folded(text).replace("-", " ").replace(",", " ").split() if w]


def name_score(wanted: Sequence[str], resource: dict[str, Any]) -> float:
    """How close a record's names are to the words searched for (0-1): each word's best
    Jaro-Winkler similarity to a name word of the record, averaged."""
    words = {w for value in string_values(resource, "name") for w in _words(value)}
    if not words or not wanted:
        return 0.0
    total = 0.0
    for word in wanted:
        total += max(JaroWinkler.normalized_similarity(word, w) for w in words)
    return total / len(wanted)


def _name_condition(wanted: Sequence[str]) -> ColumnElement[bool]:
    return or_(*(token_prefix("name", word[:PREFIX]) for word in sorted(set(wanted))))


def _person_hits(
    session: Session, golden_ids: Sequence[str], scores: dict[str, float] | None = None
) -> list[PersonHit]:
    found = people(session, golden_ids)
    hits = []
    for golden_id in golden_ids:
        person = found.get(golden_id)
        if person is None:
            continue
        members = person.members
        named = next((m for m in members if person_name(m.resource)), None)
        first = named or (members[0] if members else None)
        resource = first.resource if first else {}
        hits.append(
            PersonHit(
                golden_id=golden_id,
                name=person_name(resource),
                birth_date=_text(resource, "birthDate"),
                gender=_text(resource, "gender"),
                records=len(members),
                systems=sorted({m.client_system for m in members}),
                score=None if scores is None else round(scores[golden_id], 3),
            )
        )
    return hits


def _text(resource: dict[str, Any], key: str) -> str | None:
    value = resource.get(key)
    return value if isinstance(value, str) else None


def _by_id(
    session: Session, given: dict[str, str], query: PatientQuery
) -> tuple[list[str], dict[str, float] | None]:
    """The person a CRUID or record id names (a retired CRUID leads to its successor), if
    its records pass the other criteria."""
    wanted = given["cruid"]
    golden = session.get(GoldenRecord, wanted)
    if golden is None:
        record = session.get(SourceRecord, wanted)
        if record is None or record.golden_id is None:
            return [], None
        golden = session.get(GoldenRecord, record.golden_id)
    seen: set[str] = set()
    while golden is not None and golden.replaced_by and golden.id not in seen:
        seen.add(golden.id)
        golden = session.get(GoldenRecord, golden.replaced_by)
    if golden is None:
        return [], None
    members = source_records(session, [SourceRecord.golden_id == golden.id])
    passing = _passing(members, given, query)
    if not passing:
        return [], None
    if "name" not in given:
        return [golden.id], None
    return [golden.id], {golden.id: max(score for _, score in passing)}


def _passing(
    records: Iterable[Stored], given: dict[str, str], query: PatientQuery
) -> list[tuple[Stored, float]]:
    """The records that meet every criterion, with their name scores (1 without a name)."""
    wanted = _words(given.get("name", ""))
    out = []
    for record in records:
        if "system" in given and record.client_system != given["system"]:
            continue
        if not patient_matches(record.resource, query.filters):
            continue
        score = 1.0
        if wanted:
            score = name_score(wanted, record.resource)
            if score < NAME_THRESHOLD:
                continue
        out.append((record, score))
    return out


def _in_sql(given: dict[str, str]) -> bool:
    return not ({"name", "gender", "identifier_system", "cruid"} & set(given))


def find_people(
    context: RegistryContext, actor: Actor, query: PeopleQuery, offset: int, limit: int
) -> PeoplePage:
    """A page of the persons ``query`` finds (empty when nothing is asked)."""
    given = _checked(query, context)
    if not given:
        return PeoplePage(items=[], offset=offset, limit=limit, total=0, capped=False)
    patient_query = _patient_query(given)
    capped = False
    with transaction(context.sessions, write=False) as session:
        scores: dict[str, float] | None = None
        if "cruid" in given:
            ordered, scores = _by_id(session, given, patient_query)
            total = len(ordered)
            page_ids = ordered[offset : offset + limit]
        else:
            conditions = prefilter(session, patient_query)
            if "system" in given:
                conditions.append(SourceRecord.client_system == given["system"])
            wanted = _words(given.get("name", ""))
            if wanted:
                conditions.append(_name_condition(wanted))
            if _in_sql(given):
                page_ids, total = _sql_page(session, conditions, offset, limit)
            else:
                ids = list(
                    session.scalars(
                        select(SourceRecord.id)
                        .where(*conditions)
                        .order_by(SourceRecord.id)
                        .limit(MAX_CANDIDATES + 1)
                    )
                )
                capped = len(ids) > MAX_CANDIDATES
                records = source_records(session, [SourceRecord.id.in_(ids[:MAX_CANDIDATES])])
                best: dict[str, float] = {}
                for record, score in _passing(records, given, patient_query):
                    if record.golden_id is not None:
                        best[record.golden_id] = max(score, best.get(record.golden_id, 0.0))
                ordered = sorted(best, key=lambda g: (-best[g], g))
                total = len(ordered)
                page_ids = ordered[offset : offset + limit]
                scores = best if wanted else None
        items = _person_hits(session, page_ids, scores)
    detail = {"criteria": sorted(given), "found": total}
    audit_read(context, actor, Reading("people-search", detail=detail))
    return PeoplePage(items=items, offset=offset, limit=limit, total=total, capped=capped)


def _sql_page(
    session: Session, conditions: list[ColumnElement[bool]], offset: int, limit: int
) -> tuple[list[str], int]:
    """Persons holding a record that passes ``conditions``, in CRUID order, and how many."""
    goldens = (
        select(SourceRecord.golden_id)
        .where(*conditions, SourceRecord.golden_id.is_not(None))
        .distinct()
    )
    total = session.scalar(select(func.count()).select_from(goldens.subquery()))
    page = session.scalars(goldens.order_by(SourceRecord.golden_id).offset(offset).limit(limit))
    return [g for g in page if g is not None], int(total or 0)


__all__ = [
    "GENDERS",
    "PeoplePage",
    "PeopleQuery",
    "PersonHit",
    "find_people",
    "name_score",
]
