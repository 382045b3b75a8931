"""Finding people: by name (fuzzy), birth date, gender, an identifier (system and value), a
CRUID or record id, and the source system — a page of persons (golden records), each with
how many source records it holds and from which systems.

Two ways, chosen by the criteria:

* **In SQL** when every criterion is exact in the database: birth date (``YYYY``,
  ``YYYY-MM`` or ``YYYY-MM-DD``, a range of the ``search_token`` index), an identifier value
  without a system (the index), the source system (a column). Persons come in CRUID order,
  counted exactly, a page read with ``LIMIT``/``OFFSET``.
* **With a name, a gender, or an identifier with its system**: a name is scored from the
  search index alone (the case- and accent-folded name values of every record, no record
  read): each word searched for against the record's closest name word among those starting
  with the word's first three letters (Jaro-Winkler), averaged; a record scoring at least
  :data:`NAME_THRESHOLD` is a candidate. The other criteria narrow the candidates in SQL, at
  most :data:`MAX_CANDIDATES` of them; a gender or an identifier's system is then checked
  exactly on the records (the Patient search's own test, :mod:`.search_query`). Persons
  come best first. When the candidates were cut short the page says so (``capped``): a
  narrower search finds the rest.

A gender alone, or a source system (with or without a gender), is refused: it would list a
large part of the registry. Each narrows other criteria.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from pydantic import BaseModel, Field
from rapidfuzz.distance import JaroWinkler
from sqlalchemy import ColumnElement, func, select
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
from clientregistry.store.db import transaction
from clientregistry.store.models import GoldenRecord, SearchToken, SourceRecord

MAX_CANDIDATES: Final = 3000
"""Most source records checked for one search."""
MAX_NAME_TOKENS: Final = 50_000
"""Most name values read for one word searched for."""
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
    if given and set(given) <= {"gender", "system"}:
        raise _refuse(
            "a source system alone lists every person it knows: add another criterion",
            "system-alone",
        )
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


def _name_scores(session: Session, wanted: Sequence[str]) -> tuple[dict[str, float], bool]:
    """Records whose name words come close to every word searched for, with their scores,
    from the search index alone (the folded name values, no resource read); and whether a
    prefix had more candidates than :data:`MAX_NAME_TOKENS`."""
    best: dict[str, dict[str, float]] = {}
    capped = False
    for word in sorted(set(wanted)):
        prefix = word[:PREFIX]
        rows = session.execute(
            select(SearchToken.record_id, SearchToken.value)
            .where(
                SearchToken.kind == "name",
                SearchToken.value >= prefix,
                SearchToken.value < prefix + "\U0010ffff",
            )
            .limit(MAX_NAME_TOKENS + 1)
        ).all()
        capped = capped or len(rows) > MAX_NAME_TOKENS
        for record_id, value in rows[:MAX_NAME_TOKENS]:
            similarity = max(JaroWinkler.normalized_similarity(word, w) for w in value.split())
            scores = best.setdefault(record_id, {})
            if similarity > scores.get(word, 0.0):
                scores[word] = similarity
    out = {}
    for record_id, scores in best.items():
        score = sum(scores.get(w, 0.0) for w in wanted) / len(wanted)
        if score >= NAME_THRESHOLD:
            out[record_id] = score
    return out, capped


def _best_per_person(
    session: Session,
    conditions: list[ColumnElement[bool]],
    given: dict[str, str],
    query: PatientQuery,
    ranked: dict[str, float] | None,
) -> tuple[dict[str, float], bool]:
    """Each person holding a record that meets every criterion, with its best record's name
    score (1 without a name); and whether the candidates were cut at
    :data:`MAX_CANDIDATES`. Records are read whole only when a criterion needs the exact
    test in Python (a gender, an identifier with its system)."""
    exact_in_python = bool({"gender", "identifier_system"} & set(given))
    columns = (SourceRecord.id, SourceRecord.golden_id)
    rows = session.execute(
        select(*columns).where(*conditions).order_by(SourceRecord.id).limit(MAX_CANDIDATES + 1)
    ).all()
    capped = len(rows) > MAX_CANDIDATES
    rows = rows[:MAX_CANDIDATES]
    if exact_in_python:
        records = source_records(session, [SourceRecord.id.in_([r[0] for r in rows])])
        passing = {r.id for r in records if patient_matches(r.resource, query.filters)}
        rows = [r for r in rows if r[0] in passing]
    best: dict[str, float] = {}
    for record_id, golden_id in rows:
        if golden_id is None:
            continue
        score = 1.0 if ranked is None else ranked[record_id]
        best[golden_id] = max(score, best.get(golden_id, 0.0))
    return best, capped


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
            if _in_sql(given):
                page_ids, total = _sql_page(session, conditions, offset, limit)
            else:
                ranked: dict[str, float] | None = None
                if wanted:
                    found, capped = _name_scores(session, wanted)
                    if len(found) > MAX_CANDIDATES:
                        kept = sorted(found, key=lambda r: (-found[r], r))[:MAX_CANDIDATES]
                        found, capped = {r: found[r] for r in kept}, True
                    conditions.append(SourceRecord.id.in_(sorted(found)))
                    ranked = found
                best, more = _best_per_person(session, conditions, given, patient_query, ranked)
                capped = capped or more
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
