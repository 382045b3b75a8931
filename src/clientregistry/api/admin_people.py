"""Admin routes for what the web UI's pages show, so that everything a person can do there is
scriptable too: finding people, a person's page, a record's earlier versions, the dashboard's
figures, the decision rules and the pair tester.

======================================  ========  ==========================================
route                                   role      what
======================================  ========  ==========================================
GET    /admin/people                    reviewer  find people (paged): name (fuzzy), birth
                                                  date, gender, identifier, CRUID, system
GET    /admin/people/{golden_id}        reviewer  records side by side, identifiers,
                                                  versions, link history
GET    /admin/records/{id}/versions/{n} reviewer  one earlier version of a source record
GET    /admin/statistics                any role  the dashboard's figures (no demographics)
GET    /admin/rules                     reviewer  the decision rules in force, readably
POST   /admin/rules/test                reviewer  score and explain two Patients or records
======================================  ========  ==========================================

Each calls a use case of :mod:`clientregistry.registry`, which audits it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from clientregistry.api.acting import actor, call
from clientregistry.api.auth import CurrentUser, ReviewerUser
from clientregistry.api.deps import Context
from clientregistry.api.params import Version
from clientregistry.registry import people_finder, person_view, rules_view, statistics
from clientregistry.registry.people_finder import PeoplePage, PeopleQuery
from clientregistry.registry.person_view import PersonView
from clientregistry.registry.rules_view import PairTest, RulesView
from clientregistry.registry.statistics import MAX_DAYS, Statistics

router = APIRouter(prefix="/admin", tags=["admin"])

Text = Annotated[str | None, Query(max_length=people_finder.MAX_VALUE)]


@router.get("/people", response_model=PeoplePage)
def find_people(
    request: Request,
    context: Context,
    user: ReviewerUser,
    name: Annotated[str | None, Query(max_length=200, description="Fuzzy: any order")] = None,
    birth_date: Annotated[str | None, Query(max_length=10, description="YYYY[-MM[-DD]]")] = None,
    gender: Annotated[str | None, Query(max_length=16)] = None,
    identifier: Annotated[str | None, Query(max_length=200, description="A value")] = None,
    identifier_system: Annotated[str | None, Query(max_length=200)] = None,
    cruid: Annotated[
        str | None, Query(max_length=64, description="A golden or source record id")
    ] = None,
    system: Annotated[str | None, Query(max_length=128, description="A client system")] = None,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PeoplePage:
    """Persons (golden records) holding a source record that meets every criterion given;
    name searches best first, others in CRUID order."""
    query = PeopleQuery(
        name=name,
        birth_date=birth_date,
        gender=gender,
        identifier=identifier,
        identifier_system=identifier_system,
        cruid=cruid,
        system=system,
    )
    return call(
        lambda: people_finder.find_people(context, actor(request, user), query, offset, limit)
    )


@router.get("/people/{golden_id}", response_model=PersonView)
def person(golden_id: str, request: Request, context: Context, user: ReviewerUser) -> PersonView:
    """A person: every source record side by side (the fields that differ marked),
    identifiers per system, each record's versions, and the history of its links."""
    return call(lambda: person_view.person_view(context, actor(request, user), golden_id))


@router.get("/records/{record_id}/versions/{version}")
def record_version(
    record_id: str, version: Version, request: Request, context: Context, user: ReviewerUser
) -> dict[str, Any]:
    """A source record as it was at one version (the Patient the system submitted)."""
    return call(
        lambda: person_view.record_version(context, actor(request, user), record_id, version)
    )


@router.get("/statistics", response_model=Statistics)
def dashboard_statistics(
    request: Request,
    context: Context,
    user: CurrentUser,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="Days of the time series")] = 30,
) -> Statistics:
    """Records and persons per system; submissions, outcomes and reviewers' decisions per
    day; match scores with the thresholds; queue sizes and ages."""
    return call(lambda: statistics.statistics(context, actor(request, user), days))


@router.get("/rules", response_model=RulesView)
def rules(request: Request, context: Context, user: ReviewerUser) -> RulesView:
    """The decision rules in force: rule sets, fields, algorithms, thresholds, m and u."""
    return call(lambda: rules_view.rules_view(context, actor(request, user)))


class PairRequest(BaseModel):
    """Each side a stored source record's id, or a FHIR Patient."""

    left: str | dict[str, Any] = Field(description="A record id or a Patient")
    right: str | dict[str, Any] = Field(description="A record id or a Patient")


@router.post("/rules/test", response_model=PairTest)
def test_pair(
    body: PairRequest, request: Request, context: Context, user: ReviewerUser
) -> PairTest:
    """Score two Patients with the rules in force and explain the verdict field by field;
    nothing is stored."""
    return call(
        lambda: rules_view.compare_pair(context, actor(request, user), body.left, body.right)
    )
