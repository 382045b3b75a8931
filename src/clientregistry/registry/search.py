"""Patient search: ``GET|POST Patient`` (PDQm ITI-78), :func:`search`.

The query comes from :func:`clientregistry.registry.search_query.parse_patient_query`.
Results are source records in id order; golden records are returned only for an ``_id``
search without other filters (they have no demographics), and as ``include`` entries
(``Patient:link``). Evaluation: a SQL prefilter
(:mod:`clientregistry.registry.search_prefilter`) narrows the candidates, then every
parameter is checked exactly in Python, page by page, stopping once the page is full.
``identifier=system|`` also restricts the identifiers returned to those systems (PDQm).
``Bundle.total`` is given when it is known without extra work (first page, all matches seen)
and for ``_summary=count``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.fhir.patient import identifiers_only
from clientregistry.registry.people import (
    Stored,
    people,
    scan_records,
    source_records,
    source_resources,
    stream_records,
)
from clientregistry.registry.search_prefilter import prefilter
from clientregistry.registry.search_query import PatientQuery, patient_matches
from clientregistry.settings import Settings
from clientregistry.store.models import GoldenRecord, SourceRecord


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
            1 for r in stream_records(session, where) if patient_matches(r.resource, query.filters)
        )
        return SearchResult(total=matched)
    page: list[Stored] = []
    exhausted = True
    for record in scan_records(session, where, after=query.cursor, batch=max(query.count * 4, 100)):
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


def matching_ids(session: Session, query: PatientQuery, *, limit: int) -> list[str]:
    """Ids of the first ``limit`` Patients ``query`` matches (a conditional create's check)."""
    found = run_search(session, replace(query, count=limit, summary_count=False, cursor=None))
    return found.order


def _search_ids(session: Session, query: PatientQuery, ids: frozenset[str]) -> SearchResult:
    """An ``_id`` search: few candidates, all evaluated (source and golden records)."""
    wanted = sorted(ids)
    records = [
        r
        for r in (source_records(session, [SourceRecord.id.in_(wanted)]) if wanted else [])
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
        result.records, source_resources(session, settings, result.records), strict=True
    ):
        by_id[record.id] = view(_restrict_identifiers(resource, query.domains))
    found = people(session, result.goldens)
    for golden_id in result.goldens:
        by_id[golden_id] = found[golden_id].resource()
    entries = [_entry(base, by_id[i], "match") for i in result.order]
    if query.include_links:
        entries += _included(session, settings, query, result, set(result.order), base, view)
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
    view: Callable[[dict[str, Any]], dict[str, Any]],
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
    for member, resource in zip(members, source_resources(session, settings, members), strict=True):
        out.append(_entry(base, view(_restrict_identifiers(resource, query.domains)), "include"))
        present.add(member.id)
    return out


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
