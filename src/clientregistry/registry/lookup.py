"""Looking people up: identifier cross-references (PIXm), matching (``$match``), search (PDQm).

Three use cases over an open :class:`RegistryContext`, each in the caller's session and
transaction (the API audits them; see :func:`record_lookup`).

PIXm — ``GET Patient/$ihe-pix`` (ITI-83), :func:`cross_reference`
    *Known identifier systems* are the configured client systems' internal id systems plus
    every identifier system present on a stored record. An unknown ``sourceIdentifier``
    system is 400 ``code-invalid``, an unknown ``targetSystem`` 403 ``code-invalid``, a known
    system with an unknown value 404 ``not-found`` (IHE's three cases, checked in that order).
    The person is every golden record holding a source record with the source identifier
    (an internal id system is looked up by the record-id index; any other system through the
    ``search_token`` index of identifier values, then an exact check). The answer is a
    ``Parameters`` with, per person, a ``targetId`` to the golden record ``Patient/<cruid>``,
    then for each linked source record a ``targetId`` ``Patient/<id>`` followed by the
    ``targetIdentifier`` of each of its identifiers. The source identifier itself is never
    returned (other identifiers of the same system are: a second record in that domain); the
    record whose own record id is the source identifier gets no ``targetId`` (it is the
    caller's own Patient). With ``targetSystem``, only identifiers of those systems are
    returned, and only the source records holding one get a ``targetId``.

``$match`` — ``POST Patient/$match`` (FHIR R4, PDQm ITI-119), :func:`match_people`
    The input is scored against the candidates the database blocking index gives, with the
    context's matcher (full scores, term-frequency adjusted), and grouped by golden record:
    a person's score is that of its best record. Grades and 0..1 scores are those of
    :mod:`clientregistry.matching.grades`; ``certainly-not`` marks a person holding a record
    recorded as a broken match of the input's own stored record (the input carries its
    record id), or whose records all fall below the potential threshold while holding a
    different identifier in a system the input also has (another national-id number).
    Callers allowed to read demographics get each person's best source record; others get
    the golden record with the identifiers of its source records and no demographics.

Search — ``GET|POST Patient`` (PDQm ITI-78), :func:`parse_patient_query`, :func:`search`
    Parameters: ``_id``, ``identifier``, ``family``, ``given``, ``name``, ``birthdate``
    (prefixes eq ne gt lt ge le sa eb), ``gender``, ``telecom``, ``address``,
    ``address-city``, ``address-postalcode``, ``address-state``, ``address-country``,
    ``mothersMaidenName``, ``active``; ``:exact`` and ``:contains`` on strings (plain: case-
    and accent-insensitive starts-with); ``_count``, ``_summary=count``,
    ``_include=Patient:link``, ``_format``, and ``_cursor`` (the paging cursor ``next`` links
    carry). Anything else is 400 ``not-supported``: an ignored filter would return the wrong
    patients. Repeated parameters AND, comma-separated values OR. Results are source records
    in id order; golden records are returned only for an ``_id`` search without other
    filters (they have no demographics), and as ``include`` entries (``Patient:link``).
    Evaluation: a SQL prefilter narrows the candidates, then every parameter is checked
    exactly in Python, page by page, stopping once the page is full. The prefilter uses the
    ``search_token`` index (:mod:`clientregistry.registry.search_tokens`, kept by each
    submission) where it can: ``identifier`` and ``telecom`` values (and ``identifier=system|``
    systems) by equality; ``family``, ``given``, ``name``, ``address-city`` and
    ``address-postalcode`` (plain and ``:exact``) as a range of the folded values starting with
    the folded search value; ``birthdate`` as ranges of the ISO strings (any prefix but
    ``ne``). The other parameters, and ``:contains``, fall back to containment in the stored
    JSON text: of the JSON spelling of identifier values, codes and exact dates, and, for
    strings, case-insensitive containment of each folded word *or* any non-ASCII character in
    the record (so accents cannot hide a match). (Containment is ``LIKE`` on SQLite,
    ``strpos`` / ``~*`` on PostgreSQL.) ``identifier=system|`` also restricts the identifiers
    returned to those systems (PDQm). ``Bundle.total`` is given when it is known without extra
    work (first page, all matches seen) and for ``_summary=count``.

    Cost: an indexed parameter costs an index range read; a search with only text-scanned
    parameters reads every stored resource's text once per query (at 100,000 records about
    0.1–0.8 s on a development machine).
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Literal, cast
from urllib.parse import urlencode

import orjson
from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Text,
    and_,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, bad_request, forbidden, wrong_resource_type
from clientregistry.fhir.patient import check_patient, golden_record_resource
from clientregistry.fhir.search_params import (
    Token,
    not_supported,
    parse_count,
    parse_format,
    parse_summary,
    parse_tokens,
    split_escaped,
    unescape,
)
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
from clientregistry.matching.normalize import parse_date
from clientregistry.registry import audit
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.search_tokens import (
    BIRTHDATE,
    IDENTIFIER,
    IDENTIFIER_SYSTEM,
    STRING_KINDS,
    TELECOM,
    cut,
    folded,
    string_values,
)
from clientregistry.registry.submit import source_resource
from clientregistry.settings import ClientSystemConfig, Settings
from clientregistry.store.blocking_index import DatabaseBlockingIndex
from clientregistry.store.db import transaction
from clientregistry.store.dialect import dialect_name
from clientregistry.store.enums import AgentKind, AuditAction, AuditOutcome, MatchStatus
from clientregistry.store.models import BrokenMatch, GoldenRecord, SearchToken, SourceRecord

READ_IDENTIFIERS: Final = "read-identifiers"
READ_DEMOGRAPHICS: Final = "read-demographics"

# ============================================================================ shared


@dataclass(frozen=True, slots=True)
class Stored:
    """A source record as the lookups read it (no features)."""

    id: str
    client_system: str
    internal_system: str
    internal_value: str
    version: int
    last_updated: datetime
    resource: dict[str, Any]
    golden_id: str | None
    match_status: MatchStatus


_STORED_COLUMNS = (
    SourceRecord.id,
    SourceRecord.client_system,
    SourceRecord.internal_system,
    SourceRecord.internal_value,
    SourceRecord.version,
    SourceRecord.last_updated,
    SourceRecord.resource,
    SourceRecord.golden_id,
    SourceRecord.match_status,
)


def _stored(row: Any) -> Stored:
    return Stored(*row)


def _text() -> ColumnElement[str]:
    """The stored resource as JSON text (compact orjson: ``"key":"value"``, no spaces)."""
    return type_coerce(SourceRecord.resource, Text)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json(value: str) -> str:
    """How a string is spelled in the stored JSON text (with its quotes)."""
    return orjson.dumps(value).decode()


def _contains(
    session: Session, fragment: str, *, case_insensitive: bool = False
) -> ColumnElement[bool]:
    """The JSON text holds ``fragment``: ``LIKE`` on SQLite (whose ``LIKE`` ignores ASCII case,
    so the case-sensitive test is a superset there); on PostgreSQL ``strpos``, or ``~*`` when
    case does not matter (both several times faster than ``LIKE``/``ILIKE`` on long text)."""
    if dialect_name(session) == "sqlite":
        return _text().like(f"%{_like_escape(fragment)}%", escape="\\")
    if case_insensitive:
        return _text().regexp_match(re.escape(fragment), flags="i")
    return func.strpos(_text(), fragment) > 0


def _member(session: Session, key: str, value: str) -> ColumnElement[bool]:
    """The JSON text holds ``"key":"value"`` somewhere (a superset of the exact test)."""
    return _contains(session, f"{_json(key)}:{_json(value)}")


def _non_ascii(session: Session) -> ColumnElement[bool]:
    """The record holds a non-ASCII character: its length in characters and in bytes differ."""
    if dialect_name(session) == "sqlite":
        return func.length(_text()) != func.length(sql_cast(_text(), LargeBinary))
    return func.char_length(_text()) != func.octet_length(_text())


_TOP: Final = "\U0010ffff"
"""Sorts after every character (token values compare by code point)."""


def _has_token(kind: str, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The record has a search token of ``kind`` satisfying ``conditions``."""
    tokens = select(SearchToken.record_id).where(SearchToken.kind == kind, *conditions)
    return SourceRecord.id.in_(tokens)


def _token_equals(kind: str, values: Iterable[str]) -> ColumnElement[bool]:
    """The record has a ``kind`` token equal to one of ``values`` (cut as stored)."""
    wanted = sorted({cut(v) for v in values})
    if len(wanted) == 1:
        return _has_token(kind, SearchToken.value == wanted[0])
    return _has_token(kind, SearchToken.value.in_(wanted))


def _token_prefix(kind: str, prefix: str) -> ColumnElement[bool]:
    """The record has a ``kind`` token starting with ``prefix`` (an index range)."""
    start = cut(prefix)
    if not start:
        return _has_token(kind)
    return _has_token(kind, SearchToken.value >= start, SearchToken.value < start + _TOP)


def _identifiers(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Identifiers of a Patient that have a system and a value."""
    out = []
    for ident in resource.get("identifier") or ():
        if (
            isinstance(ident, dict)
            and isinstance(ident.get("system"), str)
            and isinstance(ident.get("value"), str)
            and ident["value"]
        ):
            out.append(ident)
    return out


def _source_records(session: Session, where: Sequence[ColumnElement[bool]]) -> list[Stored]:
    rows = session.execute(select(*_STORED_COLUMNS).where(*where).order_by(SourceRecord.id))
    return [_stored(row) for row in rows]


def _broken(session: Session, ids: Collection[str]) -> dict[str, set[str]]:
    """Broken matches of each of ``ids``."""
    out: dict[str, set[str]] = {i: set() for i in ids}
    if not ids:
        return out
    rows = session.execute(
        select(BrokenMatch.record_a, BrokenMatch.record_b).where(
            or_(BrokenMatch.record_a.in_(ids), BrokenMatch.record_b.in_(ids))
        )
    )
    for a, b in rows:
        if a in out:
            out[a].add(b)
        if b in out:
            out[b].add(a)
    return out


def _source_resources(
    session: Session, settings: Settings, records: Sequence[Stored]
) -> list[dict[str, Any]]:
    """The FHIR form of source records (as ``GET Patient/<id>`` gives them)."""
    broken = _broken(session, [r.id for r in records])
    out = []
    for r in records:
        record = SourceRecord(
            id=r.id,
            client_system=r.client_system,
            version=r.version,
            last_updated=r.last_updated,
            resource=r.resource,
            golden_id=r.golden_id,
            match_status=r.match_status,
        )
        out.append(source_resource(record, settings.systems.get(r.client_system), broken[r.id]))
    return out


@dataclass(frozen=True, slots=True)
class Person:
    """A golden record and its source records."""

    golden: GoldenRecord
    members: list[Stored]

    def resource(self, *, with_identifiers: bool = False) -> dict[str, Any]:
        """The golden record (no demographics); with the identifiers of its source records
        when asked (identifiers are not demographics)."""
        out = golden_record_resource(
            self.golden.id,
            self.golden.version,
            self.golden.last_updated,
            [m.id for m in self.members],
            self.golden.replaced_by,
        )
        if not with_identifiers:
            return out
        seen: set[tuple[str, str]] = set()
        identifiers = []
        for member in self.members:
            for ident in _identifiers(member.resource):
                key = (ident["system"], ident["value"])
                if key not in seen:
                    seen.add(key)
                    identifiers.append(ident)
        if not identifiers:
            return out
        shaped = {k: out[k] for k in ("resourceType", "id", "meta")}
        shaped["identifier"] = identifiers
        shaped.update((k, v) for k, v in out.items() if k not in shaped)
        return shaped


def people(session: Session, golden_ids: Iterable[str]) -> dict[str, Person]:
    """Golden records by id, each with its source records (in id order)."""
    ids = sorted(set(golden_ids))
    if not ids:
        return {}
    goldens = session.scalars(select(GoldenRecord).where(GoldenRecord.id.in_(ids))).all()
    out = {g.id: Person(g, []) for g in goldens}
    for member in _source_records(session, [SourceRecord.golden_id.in_(ids)]):
        assert member.golden_id is not None
        out[member.golden_id].members.append(member)
    return out


def require_permission(system: ClientSystemConfig, *allowed: str) -> None:
    """403 unless ``system`` holds one of ``allowed``."""
    if not any(p in system.permissions for p in allowed):
        raise forbidden(f"{system.name!r} may not {allowed[0].replace('-', ' ')}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked, for the audit trail."""

    name: str
    address: str | None = None


def record_lookup(
    context: RegistryContext,
    caller: Caller,
    *,
    action: AuditAction,
    interaction: str,
    iti: str,
    outcome: int = AuditOutcome.SUCCESS,
    entity: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Audit one lookup in a transaction of its own, after the read (a lookup changes nothing,
    so there is no other transaction to join, and on SQLite no read holds the write lock).

    ``interaction`` is the FHIR restful interaction (``operation``, ``search-type``); ``iti``
    the IHE transaction (``ITI-83``, ``ITI-119``, ``ITI-78``), kept in the detail.
    """
    with transaction(context.sessions) as session:
        audit.record(
            session,
            action=action,
            outcome=int(outcome),
            interaction=interaction,
            agent=caller.name,
            agent_kind=AgentKind.SYSTEM,
            source_address=caller.address,
            entity=entity,
            detail={"transaction": iti, **(detail or {})},
        )


# ============================================================================ PIXm (ITI-83)


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
            if not value:
                raise bad_request("targetSystem: the value is empty")
            if value not in targets:
                targets.append(value)
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


def _scan(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    *,
    after: str | None = None,
    batch: int = 500,
) -> Iterator[Stored]:
    """Source records passing ``where``, in id order after ``after``, a batch at a time.

    Without conditions this walks the primary key in the database's order (and stops as soon
    as the caller does). With conditions, a walk in key order would visit every row through
    the index; instead one scan collects the ids that pass, which are then read in batches in
    Python's order (the same order on every page of a query, as the path taken depends only
    on the query's parameters).
    """
    if where:
        ids = sorted(session.scalars(select(SourceRecord.id).where(*where)))
        start = bisect.bisect_right(ids, after) if after is not None else 0
        for first in range(start, len(ids), batch):
            chunk = ids[first : first + batch]
            found = {r.id: r for r in _source_records(session, [SourceRecord.id.in_(chunk)])}
            yield from (found[i] for i in chunk if i in found)
        return
    last = after
    while True:
        statement = select(*_STORED_COLUMNS).order_by(SourceRecord.id).limit(batch)
        if last is not None:
            statement = statement.where(SourceRecord.id > last)
        rows = [_stored(row) for row in session.execute(statement)]
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].id


def _stream(
    session: Session, where: Sequence[ColumnElement[bool]], *, batch: int = 500
) -> Iterator[Stored]:
    """Source records passing ``where`` in no particular order, read as the caller goes."""
    statement = select(*_STORED_COLUMNS).where(*where).execution_options(yield_per=batch)
    result = session.execute(statement)
    try:
        for row in result:
            yield _stored(row)
    finally:
        result.close()


def identifier_system_known(session: Session, settings: Settings, system: str) -> bool:
    """Whether ``system`` is a known identifier system (see the module docstring)."""
    if system in settings.record_id_systems:
        return True
    return any(
        any(i["system"] == system for i in _identifiers(record.resource))
        for record in _stream(session, [_token_equals(IDENTIFIER_SYSTEM, [system])])
    )


def records_with_identifier(
    session: Session, settings: Settings, system: str, value: str
) -> list[Stored]:
    """Source records holding the identifier ``system|value``."""
    if system in settings.record_id_systems:
        return _source_records(
            session,
            [SourceRecord.internal_system == system, SourceRecord.internal_value == value],
        )
    found = _stream(session, [_token_equals(IDENTIFIER, [value])])
    held = [
        r
        for r in found
        if any(i["system"] == system and i["value"] == value for i in _identifiers(r.resource))
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
    if not golden_ids:
        raise FhirError(404, "not-found", "sourceIdentifier Patient Identifier not found")
    targets = set(query.targets)
    source = (query.system, query.value)
    parameters: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    found = people(session, golden_ids)
    for golden_id in golden_ids:
        person = found[golden_id]
        parameters.append(
            _parameter("targetId", "Reference", {"reference": f"Patient/{golden_id}"})
        )
        for member in person.members:
            returned = []
            for ident in _identifiers(member.resource):
                key = (ident["system"], ident["value"])
                if key == source or key in seen or (targets and key[0] not in targets):
                    continue
                seen.add(key)
                returned.append(ident)
            own = (member.internal_system, member.internal_value) == source
            if not own and (returned or not targets):
                reference = {"reference": f"Patient/{member.id}"}
                parameters.append(_parameter("targetId", "Reference", reference))
            parameters.extend(_parameter("targetIdentifier", "Identifier", i) for i in returned)
    return PixResult({"resourceType": "Parameters", "parameter": parameters}, tuple(golden_ids))


# ============================================================================ $match (ITI-119)

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
    pairs = [(i["system"], i["value"]) for i in _identifiers(patient) if i["system"] in systems]
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
    broken = set().union(*_broken(session, own).values()) if own else set()
    own_people = _golden_ids(session, own)
    broken_people = _golden_ids(session, broken) - own_people
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


def _golden_ids(session: Session, record_ids: Collection[str]) -> set[str]:
    if not record_ids:
        return set()
    rows = session.scalars(
        select(SourceRecord.golden_id).where(SourceRecord.id.in_(list(record_ids)))
    )
    return {g for g in rows if g is not None}


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
        records = _source_records(session, [SourceRecord.id.in_(ids)]) if ids else []
        by_id = dict(
            zip([r.id for r in records], _source_resources(session, settings, records), strict=True)
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


# ============================================================================ search (ITI-78)

StringModifier = Literal["", "exact", "contains"]
DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]

STRING_PARAMS: Final = frozenset(
    {
        "family",
        "given",
        "name",
        "address",
        "address-city",
        "address-postalcode",
        "address-state",
        "address-country",
        "mothersMaidenName",
    }
)
TOKEN_PARAMS: Final = frozenset({"identifier", "telecom", "gender", "active"})
DATE_PARAMS: Final = frozenset({"birthdate"})
INCLUDES: Final = frozenset({"Patient:link", "Patient:link:Patient"})
DEFAULT_COUNT: Final = 20
MAX_COUNT: Final = 100
SUPPORTED: Final = (
    "_id, identifier, family, given, name, birthdate, gender, telecom, address, address-city, "
    "address-postalcode, address-state, address-country, mothersMaidenName, active, _count, "
    "_summary=count, _include=Patient:link, _format"
)
GENDER_SYSTEM: Final = "http://hl7.org/fhir/administrative-gender"

_DATE_VALUE = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)")
_SINGLE = frozenset({"_count", "_summary", "_format", "_cursor"})


@dataclass(frozen=True, slots=True)
class StringFilter:
    param: str
    modifier: StringModifier
    values: tuple[str, ...]
    """Alternatives (OR)."""


@dataclass(frozen=True, slots=True)
class TokenFilter:
    param: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: DatePrefix
    text: str
    """The date as written (``1980``, ``1980-05``, ``1980-05-17``)."""
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class DateFilter:
    param: str
    values: tuple[DateValue, ...]


Filter = StringFilter | TokenFilter | DateFilter


@dataclass(frozen=True, slots=True)
class PatientQuery:
    """A parsed Patient search."""

    filters: tuple[Filter, ...] = ()
    ids: tuple[tuple[str, ...], ...] = ()
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    include_links: bool = False
    cursor: str | None = None
    domains: frozenset[str] = frozenset()
    """``identifier=system|``: only identifiers of these systems are returned."""
    pairs: tuple[tuple[str, str], ...] = ()
    """The parameters as given, without ``_cursor`` (for paging links)."""

    @property
    def id_set(self) -> frozenset[str] | None:
        """The ids ``_id`` allows (AND of ORs), None without ``_id``."""
        if not self.ids:
            return None
        allowed = set(self.ids[0])
        for alternatives in self.ids[1:]:
            allowed &= set(alternatives)
        return frozenset(allowed)


def _date_range(text: str) -> tuple[date, date]:
    """The days a (partial) date covers; ValueError when it is no date."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        return date(parts[0], 1, 1), date(parts[0], 12, 31)
    if len(parts) == 2:
        year, month = parts
        last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 0
        return date(year, month, 1), date(year, month, last)
    day = date(parts[0], parts[1], parts[2])
    return day, day


def parse_date_value(value: str, *, name: str = "birthdate") -> DateValue:
    """``[prefix]YYYY[-MM[-DD]]``."""
    match = _DATE_VALUE.fullmatch(value)
    if match is None:
        raise bad_request(
            f"{name}={value!r}: expected [eq|ne|gt|lt|ge|le|sa|eb]YYYY, YYYY-MM or YYYY-MM-DD"
        )
    prefix, text = match.group(1) or "eq", match.group(2)
    if prefix == "ap":
        raise not_supported(f"{name}: the prefix 'ap' is not supported")
    try:
        start, end = _date_range(text)
    except ValueError:
        raise bad_request(f"{name}={value!r}: {text} is not a date") from None
    return DateValue(cast(DatePrefix, prefix), text, start, end)


def _values(value: str, name: str) -> tuple[str, ...]:
    parts = tuple(unescape(p) for p in split_escaped(value, ","))
    if not all(p.strip() for p in parts):
        raise bad_request(f"{name}={value!r}: empty value")
    return parts


def parse_patient_query(
    pairs: Iterable[tuple[str, str]],
    *,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
) -> PatientQuery:
    """Parse Patient search parameters (decoded pairs), strictly: unknown parameters,
    modifiers and values are 400 (``not-supported`` for what this server does not do)."""
    given = list(pairs)
    filters: list[Filter] = []
    ids: list[tuple[str, ...]] = []
    count = default_count
    summary_count = False
    include = False
    cursor: str | None = None
    domains: set[str] = set()
    seen: set[str] = set()
    for name, value in given:
        base, _, modifier = name.partition(":")
        if base in _SINGLE and base in seen:
            raise bad_request(f"{base} may be given only once")
        seen.add(base)
        if modifier and base not in STRING_PARAMS:
            raise not_supported(f"The modifier in {name!r} is not supported")
        if base == "_id":
            ids.append(_values(value, name))
        elif base in STRING_PARAMS:
            if modifier not in ("", "exact", "contains"):
                raise not_supported(
                    f"The modifier in {name!r} is not supported (supported: :exact, :contains)"
                )
            filters.append(StringFilter(base, cast(StringModifier, modifier), _values(value, name)))
        elif base in TOKEN_PARAMS:
            tokens = parse_tokens(value, name=base)
            if base == "active" and any(t.code not in ("true", "false") for t in tokens):
                raise bad_request(f"active={value!r}: expected true or false")
            if base == "identifier":
                domains.update(t.system for t in tokens if t.system and t.code is None)
            filters.append(TokenFilter(base, tokens))
        elif base in DATE_PARAMS:
            parts = split_escaped(value, ",")
            filters.append(DateFilter(base, tuple(parse_date_value(p, name=base) for p in parts)))
        elif base == "_count":
            count = parse_count(value, maximum=max_count)
        elif base == "_summary":
            summary_count = parse_summary(value, supported=("count", "false")) == "count"
        elif base == "_include":
            if value not in INCLUDES:
                raise not_supported(f"_include={value} is not supported (supported: Patient:link)")
            include = True
        elif base == "_format":
            parse_format(value)
        elif base == "_cursor":
            if not value:
                raise bad_request("_cursor: the value is empty")
            cursor = value
        else:
            raise not_supported(f"Unknown search parameter {name!r} (supported: {SUPPORTED})")
    return PatientQuery(
        filters=tuple(filters),
        ids=tuple(ids),
        count=count,
        summary_count=summary_count or count == 0,
        include_links=include,
        cursor=cursor,
        domains=frozenset(domains),
        pairs=tuple((n, v) for n, v in given if n != "_cursor"),
    )


# ----------------------------------------------------------------------------- exact matching


_strings = string_values
_folded = folded


def string_matches(modifier: StringModifier, wanted: str, value: str) -> bool:
    """FHIR string matching: plain = case- and accent-insensitive starts-with (spacing
    collapsed), ``exact`` = equal, ``contains`` = case- and accent-insensitive substring."""
    if modifier == "exact":
        return value == wanted
    if modifier == "contains":
        return _folded(wanted) in _folded(value)
    return _folded(value).startswith(_folded(wanted))


def _token_pairs(resource: Mapping[str, Any], param: str) -> list[tuple[str, str]]:
    """(system, code) pairs a token parameter searches; "" for no system."""
    if param == "identifier":
        out = []
        for ident in resource.get("identifier") or ():
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                system = ident.get("system")
                out.append((system if isinstance(system, str) else "", ident["value"]))
        return out
    if param == "telecom":
        out = []
        for point in resource.get("telecom") or ():
            if isinstance(point, dict) and isinstance(point.get("value"), str):
                system = point.get("system")
                out.append((system if isinstance(system, str) else "", point["value"]))
        return out
    if param == "gender":
        gender = resource.get("gender")
        return [(GENDER_SYSTEM, gender)] if isinstance(gender, str) else []
    active = resource.get("active")
    return [("", "true" if active else "false")] if isinstance(active, bool) else []


def token_matches(token: Token, system: str, code: str) -> bool:
    """FHIR token matching of one (system, code) pair; ``system`` "" means none."""
    if token.code is not None and token.code != code:
        return False
    if token.system is None:
        return True
    return token.system == system


def date_matches(prefix: DatePrefix, wanted: tuple[date, date], value: tuple[date, date]) -> bool:
    """FHIR date matching of two ranges (search value ``wanted``, the record's ``value``)."""
    (s_start, s_end), (t_start, t_end) = wanted, value
    contained = s_start <= t_start and t_end <= s_end
    return {
        "eq": contained,
        "ne": not contained,
        "gt": t_end > s_end,
        "lt": t_start < s_start,
        "ge": t_end > s_end or contained,
        "le": t_start < s_start or contained,
        "sa": t_start > s_end,
        "eb": t_end < s_start,
    }[prefix]


def _birth_range(resource: Mapping[str, Any]) -> tuple[date, date] | None:
    raw = resource.get("birthDate")
    text = parse_date(raw) if isinstance(raw, str) else None
    if not text:
        return None
    try:
        return _date_range(text)
    except ValueError:
        return None


def filter_matches(resource: Mapping[str, Any], item: Filter) -> bool:
    """Whether a Patient satisfies one parameter (any of its alternatives)."""
    if isinstance(item, StringFilter):
        values = _strings(resource, item.param)
        return any(string_matches(item.modifier, w, v) for w in item.values for v in values)
    if isinstance(item, TokenFilter):
        pairs = _token_pairs(resource, item.param)
        return any(token_matches(t, s, c) for t in item.tokens for s, c in pairs)
    birth = _birth_range(resource)
    if birth is None:
        return False
    return any(date_matches(v.prefix, (v.start, v.end), birth) for v in item.values)


def patient_matches(resource: Mapping[str, Any], filters: Iterable[Filter]) -> bool:
    return all(filter_matches(resource, f) for f in filters)


# ----------------------------------------------------------------------------- SQL prefilter

_JSON_SAFE = re.compile(r"[ -~]+")  # printable ASCII: spelled as is in JSON unless " or \


def _word_condition(session: Session, word: str) -> ColumnElement[bool] | None:
    """A case-insensitive containment test for one folded ASCII word of a string value.

    Not anchored at the JSON string's opening quote: ``LIKE '%"word%'`` is several times
    slower in SQLite (quotes abound in JSON), and starts-with is checked in Python anyway.
    """
    if not _JSON_SAFE.fullmatch(word) or '"' in word or "\\" in word:
        return None
    return _contains(session, word, case_insensitive=True)


def _string_text_condition(session: Session, item: StringFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a string parameter; None when it cannot narrow.

    Folding only lowercases ASCII, so an ASCII record matches only if its text holds every
    folded word; records holding any non-ASCII character always pass (accents, ``ß``...).
    """
    alternatives = []
    for wanted in item.values:
        if item.modifier == "exact":
            alternatives.append(_contains(session, _json(wanted)))
            continue
        conditions = [_word_condition(session, w) for w in _folded(wanted).split()]
        usable = [c for c in conditions if c is not None]
        if not usable:
            return None  # this alternative cannot be narrowed: nor can the parameter
        alternatives.append(or_(and_(*usable), _non_ascii(session)))
    return or_(*alternatives)


def _string_condition(session: Session, item: StringFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a string parameter; None when it cannot narrow.

    Parameters with search tokens (and not ``:contains``) are a range of the token index:
    the folded value starts with the folded search value (``:exact`` values fold too).
    The others fall back to containment in the stored JSON text.
    """
    if item.param not in STRING_KINDS or item.modifier == "contains":
        return _string_text_condition(session, item)
    return or_(*(_token_prefix(item.param, _folded(wanted)) for wanted in item.values))


def _token_condition(session: Session, item: TokenFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a token parameter; None when it cannot narrow.

    ``identifier`` and ``telecom`` with codes are token index look-ups; ``identifier``
    with systems only looks up the systems; the rest is containment in the JSON text.
    """
    kinds = {"identifier": IDENTIFIER, "telecom": TELECOM}
    if item.param in kinds and all(t.code is not None for t in item.tokens):
        return _token_equals(kinds[item.param], [str(t.code) for t in item.tokens])
    if item.param == "identifier" and all(t.code is None and t.system for t in item.tokens):
        return _token_equals(IDENTIFIER_SYSTEM, [str(t.system) for t in item.tokens])
    return _token_text_condition(session, item)


def _token_text_condition(session: Session, item: TokenFilter) -> ColumnElement[bool] | None:
    key = {"identifier": "value", "telecom": "value", "gender": "gender", "active": "active"}
    alternatives: list[ColumnElement[bool]] = []
    for token in item.tokens:
        parts: list[ColumnElement[bool]] = []
        if token.code is not None:
            if item.param == "active":
                parts.append(_contains(session, f'"active":{token.code}'))
            else:
                parts.append(_member(session, key[item.param], token.code))
        if item.param in ("identifier", "telecom") and token.system:
            parts.append(_member(session, "system", token.system))
        if not parts:
            return None
        alternatives.append(and_(*parts))
    return or_(*alternatives)


def _date_condition(session: Session, item: DateFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching ``birthdate``: ranges of the ISO strings in the
    token index (``YYYY[-MM[-DD]]`` sorts as the dates do; every year has four digits).

    ``eq``: the record's date starts with the searched one. ``gt``/``ge``/``sa``: it ends
    after the search starts, so its year is at least the search's first year;
    ``lt``/``le``/``eb``: its year is at most the search's last year. ``ne`` cannot narrow.
    """
    alternatives = []
    for v in item.values:
        if v.prefix == "eq":
            alternatives.append(_token_prefix(BIRTHDATE, v.text))
        elif v.prefix in ("gt", "ge", "sa"):
            alternatives.append(_has_token(BIRTHDATE, SearchToken.value >= f"{v.start.year:04d}"))
        elif v.prefix in ("lt", "le", "eb"):
            bound = [SearchToken.value < f"{v.end.year + 1:04d}"] if v.end.year < 9999 else []
            alternatives.append(_has_token(BIRTHDATE, *bound))
        else:
            return None
    return or_(*alternatives)


def prefilter(session: Session, query: PatientQuery) -> list[ColumnElement[bool]]:
    """SQL conditions every match satisfies (a superset: the exact test follows)."""
    out: list[ColumnElement[bool]] = []
    for item in query.filters:
        condition: ColumnElement[bool] | None
        if isinstance(item, StringFilter):
            condition = _string_condition(session, item)
        elif isinstance(item, TokenFilter):
            condition = _token_condition(session, item)
        else:
            condition = _date_condition(session, item)
        if condition is not None:
            out.append(condition)
    return out


# ----------------------------------------------------------------------------- running a search


@dataclass(slots=True)
class SearchResult:
    """One page: matches (source records and, for ``_id``, golden records) in id order."""

    records: list[Stored] = field(default_factory=list)
    goldens: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    """Ids of the page's matches in order."""
    next_cursor: str | None = None
    total: int | None = None


def run_search(session: Session, query: PatientQuery) -> SearchResult:
    """The page of matches ``query`` asks for (or only the total for ``_summary=count``)."""
    ids = query.id_set
    if ids is not None:
        return _search_ids(session, query, ids)
    where = prefilter(session, query)
    if query.summary_count:
        if not query.filters:
            total = session.scalar(select(func.count()).select_from(SourceRecord))
            return SearchResult(total=int(total or 0))
        matched = sum(
            1 for r in _stream(session, where) if patient_matches(r.resource, query.filters)
        )
        return SearchResult(total=matched)
    page: list[Stored] = []
    exhausted = True
    for record in _scan(session, where, after=query.cursor, batch=max(query.count * 4, 100)):
        if not patient_matches(record.resource, query.filters):
            continue
        if len(page) == query.count:
            exhausted = False
            break
        page.append(record)
    result = SearchResult(records=page, order=[r.id for r in page])
    if not exhausted and page:
        result.next_cursor = page[-1].id
    if exhausted and query.cursor is None:
        result.total = len(page)
    return result


def _search_ids(session: Session, query: PatientQuery, ids: frozenset[str]) -> SearchResult:
    """An ``_id`` search: few candidates, all evaluated (source and golden records)."""
    wanted = sorted(ids)
    records = [
        r
        for r in (_source_records(session, [SourceRecord.id.in_(wanted)]) if wanted else [])
        if patient_matches(r.resource, query.filters)
    ]
    goldens: list[str] = []
    if wanted and not query.filters:
        goldens = list(session.scalars(select(GoldenRecord.id).where(GoldenRecord.id.in_(wanted))))
    everything = sorted([r.id for r in records] + goldens)
    if query.summary_count:
        return SearchResult(total=len(everything))
    after = [i for i in everything if query.cursor is None or i > query.cursor]
    page_ids = after[: query.count]
    result = SearchResult(
        records=[r for r in records if r.id in page_ids],
        goldens=[g for g in goldens if g in page_ids],
        order=page_ids,
        total=len(everything) if query.cursor is None else None,
    )
    if len(after) > query.count and page_ids:
        result.next_cursor = page_ids[-1]
    return result


def _restrict_identifiers(resource: dict[str, Any], domains: frozenset[str]) -> dict[str, Any]:
    if not domains or "identifier" not in resource:
        return resource
    kept = [i for i in resource["identifier"] if isinstance(i, dict) and i.get("system") in domains]
    out = dict(resource)
    if kept:
        out["identifier"] = kept
    else:
        del out["identifier"]
    return out


def search(
    session: Session, settings: Settings, query: PatientQuery, *, base: str
) -> tuple[dict[str, Any], int]:
    """ITI-78: the ``searchset`` Bundle of ``query`` and the number of matches on the page."""
    result = run_search(session, query)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    self_pairs = list(query.pairs) + ([("_cursor", query.cursor)] if query.cursor else [])
    links = [{"relation": "self", "url": _search_url(base, self_pairs)}]
    if result.next_cursor is not None:
        next_pairs = [*query.pairs, ("_cursor", result.next_cursor)]
        links.append({"relation": "next", "url": _search_url(base, next_pairs)})
    bundle["link"] = links
    if query.summary_count:
        return bundle, 0
    by_id: dict[str, dict[str, Any]] = {}
    for record, resource in zip(
        result.records, _source_resources(session, settings, result.records), strict=True
    ):
        by_id[record.id] = _restrict_identifiers(resource, query.domains)
    found = people(session, result.goldens)
    for golden_id in result.goldens:
        by_id[golden_id] = found[golden_id].resource()
    entries = [_entry(base, by_id[i], "match") for i in result.order]
    if query.include_links:
        entries += _included(session, settings, query, result, set(result.order), base)
    if entries:
        bundle["entry"] = entries
    return bundle, len(result.order)


def _included(
    session: Session,
    settings: Settings,
    query: PatientQuery,
    result: SearchResult,
    present: set[str],
    base: str,
) -> list[dict[str, Any]]:
    """``_include=Patient:link``: the golden records of matched source records, and the
    source records of matched golden records."""
    out = []
    golden_ids = {r.golden_id for r in result.records if r.golden_id is not None} - present
    linked = people(session, golden_ids)
    for golden_id in sorted(linked):
        out.append(_entry(base, linked[golden_id].resource(), "include"))
        present.add(golden_id)
    members = [m for p in people(session, result.goldens).values() for m in p.members]
    members = [m for m in members if m.id not in present]
    for member, resource in zip(
        members, _source_resources(session, settings, members), strict=True
    ):
        out.append(_entry(base, _restrict_identifiers(resource, query.domains), "include"))
        present.add(member.id)
    return out


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/Patient/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _search_url(base: str, pairs: Sequence[tuple[str, str]]) -> str:
    query = urlencode(list(pairs))
    return f"{base}/Patient?{query}" if query else f"{base}/Patient"


__all__ = [
    "Caller",
    "MatchRequest",
    "PatientQuery",
    "PersonMatch",
    "PixQuery",
    "PixResult",
    "cross_reference",
    "match_bundle",
    "match_people",
    "parse_match_request",
    "parse_patient_query",
    "parse_pix_query",
    "record_lookup",
    "require_permission",
    "run_search",
    "search",
    "select_matches",
]
