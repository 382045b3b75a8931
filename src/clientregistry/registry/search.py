"""Patient search: ``GET|POST Patient`` (PDQm ITI-78), :func:`search`.

The query comes from :func:`clientregistry.registry.search_query.parse_patient_query`.
Results are source records; golden records are returned only for an ``_id`` search without
other filters (they have no demographics), and as ``include`` entries (``Patient:link``).
Evaluation: a SQL prefilter (:mod:`clientregistry.registry.search_prefilter`) narrows the
candidates, then every parameter is checked exactly in Python.

Order and paging: without ``_sort``, matches come in id order, page by page, stopping once
the page is full; ``next`` links carry the last id (``_cursor``). With ``_sort`` every match
is read and sorted (at most :data:`MAX_SORTED`; a broader sorted search is 400
``too-costly``), and ``next`` links carry the position (``_offset``).

``Bundle.total``: with ``_total=accurate`` on every page (counting every match); by default
when it is cheap — the first page holds every match, the prefilter leaves at most
:data:`CHEAP_TOTAL` candidates, or the search is sorted (all matches were read); never with
``_total=none``. (Counting every record, for a search without filters, is not cheap at a
million records.)

PDQm: ``identifier=system|`` restricts the identifiers returned to those systems; an
identifier domain the registry does not know gives an empty Bundle with a warning (ITI-78
Case 4: ``targetSystem not found``); a matched record that was merged into another
(``replaced-by``) comes with its survivor as an ``include`` entry (Case 6). Parameters
left out under lenient handling are reported in a warning OperationOutcome entry
(``search.mode = outcome``) and left out of the ``self`` link.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, Issue
from clientregistry.fhir.operation_outcome import operation_outcome
from clientregistry.fhir.patient import identifiers_only
from clientregistry.registry.people import (
    Stored,
    people,
    records_in_id_order,
    source_records,
    source_resources,
    stream_records,
)
from clientregistry.registry.pix import identifier_system_known
from clientregistry.registry.search_prefilter import instant_conditions, prefilter
from clientregistry.registry.search_query import (
    PatientQuery,
    SortKey,
    keep_elements,
    patient_matches,
    sort_value,
)
from clientregistry.settings import Settings
from clientregistry.store.models import GoldenRecord, SourceRecord

CHEAP_TOTAL: Final = 200
"""A search whose prefilter leaves at most this many candidates gets its total unasked."""
MAX_SORTED: Final = 10_000
"""Most matches a sorted search reads (and sorts) for one page."""


@dataclass(slots=True)
class SearchResult:
    """One page: matches (source records and, for ``_id``, golden records) in order."""

    records: list[Stored] = field(default_factory=list)
    goldens: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    """Ids of the page's matches in order."""
    next_cursor: str | None = None
    next_offset: int | None = None
    total: int | None = None


def run_search(session: Session, query: PatientQuery) -> SearchResult:
    """The page of matches ``query`` asks for (or only the total for ``_summary=count``)."""
    ids = query.id_set
    if ids is not None:
        return _search_ids(session, query, ids)
    where = prefilter(session, query)
    if query.summary_count:
        return SearchResult(total=_count(session, query, where))
    if query.sort:
        return _sorted(session, query, stream_records(session, where))
    return _in_id_order(session, query, where)


def _count(session: Session, query: PatientQuery, where: Sequence[Any]) -> int:
    """How many records match (every one read, but for a query without filters)."""
    if not query.filters:
        total = session.scalar(select(func.count()).select_from(SourceRecord).where(*where))
        return int(total or 0)
    found = stream_records(session, where)
    return sum(1 for r in found if patient_matches(r.resource, query.filters))


def _in_id_order(session: Session, query: PatientQuery, where: Sequence[Any]) -> SearchResult:
    candidates = None
    if where:
        candidates = sorted(session.scalars(select(SourceRecord.id).where(*where)))
    page: list[Stored] = []
    exhausted = True
    batch = max(query.count * 4, 100)
    found = records_in_id_order(session, candidates, after=query.cursor, batch=batch)
    for record in found:
        if not patient_matches(record.resource, query.filters):
            continue
        if len(page) == query.count:
            exhausted = False
            break
        page.append(record)
    result = SearchResult(records=page, order=[r.id for r in page])
    if not exhausted and page:
        result.next_cursor = page[-1].id
    if query.total == "none":
        return result
    if exhausted and query.cursor is None:
        result.total = len(page)
    elif candidates is not None and (query.total == "accurate" or len(candidates) <= CHEAP_TOTAL):
        every = records_in_id_order(session, candidates, batch=500)
        result.total = sum(1 for r in every if patient_matches(r.resource, query.filters))
    elif query.total == "accurate":
        result.total = _count(session, query, where)
    return result


def _sorted(session: Session, query: PatientQuery, found: Iterator[Stored]) -> SearchResult:
    """Every match, sorted; the page at ``query.offset``."""
    matches: list[Stored] = []
    for record in found:
        if patient_matches(record.resource, query.filters):
            matches.append(record)
            if len(matches) > MAX_SORTED:
                raise FhirError(
                    400,
                    "too-costly",
                    f"More than {MAX_SORTED} Patients match: too many to sort; narrow the "
                    "search (or leave out _sort)",
                )
    ordered = sort_records(matches, query.sort)
    page = ordered[query.offset : query.offset + query.count]
    result = SearchResult(records=page, order=[r.id for r in page])
    if query.offset + query.count < len(ordered) and query.count:
        result.next_offset = query.offset + query.count
    if query.total != "none":
        result.total = len(ordered)
    return result


def sort_records(records: Sequence[Stored], keys: Sequence[SortKey]) -> list[Stored]:
    """``records`` in ``keys`` order (then by id); a record without a value for a key comes
    after those with one, ascending or descending."""
    ordered = sorted(records, key=lambda r: r.id)
    for key in reversed(keys):
        ordered.sort(key=_sort_key(key), reverse=key.descending)
    return ordered


def _sort_key(key: SortKey) -> Callable[[Stored], tuple[int, Any]]:
    if key.name == "_id":
        return lambda r: (0, r.id)
    if key.name == "_lastUpdated":
        return lambda r: (0, r.last_updated)
    present, missing = (1, 0) if key.descending else (0, 1)
    pick = max if key.descending else min

    def of(record: Stored) -> tuple[int, Any]:
        values = sort_value(record.resource, key.name)
        return (present, pick(values)) if values else (missing, "")

    return of


def matching_ids(session: Session, query: PatientQuery, *, limit: int) -> list[str]:
    """Ids of the first ``limit`` Patients ``query`` matches (a conditional create's check)."""
    found = run_search(
        session,
        replace(query, count=limit, summary_count=False, cursor=None, sort=(), offset=0),
    )
    return found.order


def _search_ids(session: Session, query: PatientQuery, ids: frozenset[str]) -> SearchResult:
    """An ``_id`` search: few candidates, all evaluated (source and golden records)."""
    wanted = sorted(ids)
    where = [SourceRecord.id.in_(wanted), *instant_conditions(query, SourceRecord.last_updated)]
    records = [
        r
        for r in (source_records(session, where) if wanted else [])
        if patient_matches(r.resource, query.filters)
    ]
    goldens: list[str] = []
    if wanted and not query.filters:
        golden_where = instant_conditions(query, GoldenRecord.last_updated)
        goldens = list(
            session.scalars(
                select(GoldenRecord.id)
                .where(GoldenRecord.id.in_(wanted), *golden_where)
                .order_by(GoldenRecord.id)
            )
        )
    if query.summary_count:
        return SearchResult(total=len(records) + len(goldens))
    if query.sort:
        ordered = [r.id for r in sort_records(records, query.sort)] + goldens
        page_ids = ordered[query.offset : query.offset + query.count]
        more = query.offset + query.count < len(ordered)
        next_offset = query.offset + query.count if more and query.count else None
        total = len(ordered)
        next_cursor = None
    else:
        everything = sorted([r.id for r in records] + goldens)
        after = [i for i in everything if query.cursor is None or i > query.cursor]
        page_ids = after[: query.count]
        total = len(everything)
        next_offset = None
        next_cursor = page_ids[-1] if len(after) > query.count and page_ids else None
    return SearchResult(
        records=[r for r in records if r.id in page_ids],
        goldens=[g for g in goldens if g in page_ids],
        order=page_ids,
        next_cursor=next_cursor,
        next_offset=next_offset,
        total=None if query.total == "none" else total,
    )


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
    session: Session,
    settings: Settings,
    query: PatientQuery,
    *,
    base: str,
    demographics: bool = True,
) -> tuple[dict[str, Any], int]:
    """ITI-78: the ``searchset`` Bundle of ``query`` and the number of matches on the page.

    Without ``demographics`` (a caller that may not read them) source records come as
    :func:`~clientregistry.fhir.patient.identifiers_only` shows them."""
    view = _identity if demographics else identifiers_only
    warnings = [
        Issue("not-supported", f"{name}={value} was ignored: {why}", (), "warning")
        for name, value, why in query.ignored
    ]
    unknown = [
        system
        for system in query.identifier_systems
        if not identifier_system_known(session, settings, system)
    ]
    if unknown:  # ITI-78 Case 4: nothing can match
        warnings += [
            Issue("not-found", "targetSystem not found", (f"identifier={system}|",), "warning")
            for system in unknown
        ]
        result = SearchResult(total=None if query.total == "none" else 0)
    else:
        result = run_search(session, query)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = _links(base, query, result)
    entries = [] if query.summary_count else _matches(session, settings, query, result, base, view)
    if warnings:
        outcome = operation_outcome(warnings)
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": outcome,
                "search": {"mode": "outcome"},
            }
        )
    if entries:
        bundle["entry"] = entries
    return bundle, len(result.order)


def _links(base: str, query: PatientQuery, result: SearchResult) -> list[dict[str, str]]:
    """``self`` (the parameters used) and ``next``."""
    here: list[tuple[str, str]] = []
    if query.cursor:
        here.append(("_cursor", query.cursor))
    if query.offset:
        here.append(("_offset", str(query.offset)))
    links = [{"relation": "self", "url": _search_url(base, [*query.pairs, *here])}]
    onward = None
    if result.next_cursor is not None:
        onward = ("_cursor", result.next_cursor)
    elif result.next_offset is not None:
        onward = ("_offset", str(result.next_offset))
    if onward is not None:
        links.append({"relation": "next", "url": _search_url(base, [*query.pairs, onward])})
    return links


def _matches(
    session: Session,
    settings: Settings,
    query: PatientQuery,
    result: SearchResult,
    base: str,
    view: Callable[[dict[str, Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The page's ``match`` entries (``_elements`` applied), then the ``include`` ones."""
    by_id: dict[str, dict[str, Any]] = {}
    for record, resource in zip(
        result.records, source_resources(session, settings, result.records), strict=True
    ):
        by_id[record.id] = view(_restrict_identifiers(resource, query.domains))
    found = people(session, result.goldens)
    for golden_id in result.goldens:
        by_id[golden_id] = found[golden_id].resource()
    shown = by_id
    if query.elements is not None:
        elements = query.elements
        shown = {k: keep_elements(v, elements, leave_out=query.leave_out) for k, v in by_id.items()}
    entries = [_entry(base, shown[i], "match") for i in result.order]
    extra = _Includes(session, settings, query, base, view, set(result.order))
    if query.include_links:
        entries += extra.linked(result)
    entries += extra.survivors(result)
    return entries


@dataclass
class _Includes:
    """The ``include`` entries of a page, each Patient once (``present``: those in already)."""

    session: Session
    settings: Settings
    query: PatientQuery
    base: str
    view: Callable[[dict[str, Any]], dict[str, Any]]
    present: set[str]

    def sources(self, records: Sequence[Stored]) -> list[dict[str, Any]]:
        """Entries of source records not in yet."""
        records = [r for r in records if r.id not in self.present]
        self.present.update(r.id for r in records)
        resources = source_resources(self.session, self.settings, records)
        shown = (self.view(_restrict_identifiers(r, self.query.domains)) for r in resources)
        return [_entry(self.base, resource, "include") for resource in shown]

    def linked(self, result: SearchResult) -> list[dict[str, Any]]:
        """``_include=Patient:link``: the golden records of matched source records, and the
        source records of matched golden records."""
        out = []
        golden_ids = {r.golden_id for r in result.records if r.golden_id is not None}
        linked = people(self.session, golden_ids - self.present)
        for golden_id in sorted(linked):
            out.append(_entry(self.base, linked[golden_id].resource(), "include"))
            self.present.add(golden_id)
        found = people(self.session, result.goldens).values()
        return out + self.sources([m for person in found for m in person.members])

    def survivors(self, result: SearchResult) -> list[dict[str, Any]]:
        """ITI-78 Case 6: the record each merged match was replaced by."""
        wanted = sorted({r.replaced_by for r in result.records if r.replaced_by} - self.present)
        if not wanted:
            return []
        return self.sources(source_records(self.session, [SourceRecord.id.in_(wanted)]))


def _identity(resource: dict[str, Any]) -> dict[str, Any]:
    return resource


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
    "SearchResult",
    "matching_ids",
    "run_search",
    "search",
]
