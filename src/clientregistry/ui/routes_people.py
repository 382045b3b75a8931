"""Finding people and a person's page, with the actions on its records: break a record out
(with a reason), revert a break, join another record in, and the record as the FHIR API
serves it."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from clientregistry.registry import people_finder, person_view, reviewing
from clientregistry.registry.people_finder import GENDERS, PeopleQuery
from clientregistry.ui.pages import PageError, Reviewer

router = APIRouter(prefix="/ui")
PAGE_SIZE = 20
Text = Annotated[str | None, Query(max_length=200)]


def _offset(raw: str | None) -> int:
    try:
        return max(0, min(int(raw or 0), 100_000))
    except ValueError:
        return 0


@router.get("/people")
def find(
    page: Reviewer,
    name: Text = None,
    birth_date: Text = None,
    gender: Text = None,
    identifier: Text = None,
    identifier_system: Text = None,
    cruid: Text = None,
    system: Text = None,
    offset: Text = None,
) -> Response:
    query = PeopleQuery(
        name=name,
        birth_date=birth_date,
        gender=gender,
        identifier=identifier,
        identifier_system=identifier_system,
        cruid=cruid,
        system=system,
    )
    criteria = query.given()
    results = None
    error = None
    if criteria:
        try:
            results = page.call(
                lambda: people_finder.find_people(
                    page.context, page.actor, query, _offset(offset), PAGE_SIZE
                )
            )
        except PageError as refused:
            error = refused.message
    base = "/ui/people?" + "".join(f"{k}={_quote(v)}&" for k, v in criteria.items())
    return page.render(
        "people.html",
        criteria=criteria,
        results=results,
        error=error,
        genders=GENDERS,
        systems=sorted(page.context.settings.systems),
        base=base,
        status=400 if error else 200,
    )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@router.get("/people/{golden_id}")
def person(
    golden_id: str,
    page: Reviewer,
    done: Annotated[str | None, Query(max_length=32)] = None,
    event: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> Response:
    view = page.call(lambda: person_view.person_view(page.context, page.actor, golden_id))
    if not view.active and view.replaced_by and not view.members:
        return page.redirect(f"/ui/people/{view.replaced_by}", done="moved")
    return page.render("person.html", person=view, done=done, event=event)


@router.get("/records/{record_id}")
def record(record_id: str, page: Reviewer) -> Response:
    """A source record: its person's page, at the record."""
    found = page.call(
        lambda: people_finder.find_people(
            page.context, page.actor, PeopleQuery(cruid=record_id), 0, 1
        )
    )
    if not found.items:
        raise PageError(404, page._("Not found"), page._("There is no such record."))
    return page.redirect(f"/ui/people/{found.items[0].golden_id}#record-{record_id}")


@router.get("/records/{record_id}/fhir")
def record_fhir(record_id: str, page: Reviewer) -> Response:
    """The record as ``GET /fhir/Patient/{id}`` serves it."""
    view = page.call(lambda: reviewing.record(page.context, page.actor, record_id))
    text = orjson.dumps(view.resource, option=orjson.OPT_INDENT_2).decode()
    return page.render("record_fhir.html", view=view, text=text, version=None)


@router.get("/records/{record_id}/versions/{version}")
def record_version(record_id: str, version: int, page: Reviewer) -> Response:
    resource = page.call(
        lambda: person_view.record_version(page.context, page.actor, record_id, version)
    )
    text = orjson.dumps(resource, option=orjson.OPT_INDENT_2).decode()
    return page.render(
        "record_fhir.html", view=None, text=text, version=version, record_id=record_id
    )


@router.post("/records/{record_id}/break")
async def break_record(record_id: str, page: Reviewer) -> Response:
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    back = form.get("back", "")
    actor, reason = page.actor, form.get("reason")
    done = await run_in_threadpool(
        page.call,
        lambda: reviewing.break_record(page.context, actor, record_id, reason=reason),
    )
    return page.redirect(
        f"/ui/people/{back or done.golden_id}", done="broken", event=done.audit_event_id
    )


@router.post("/records/{record_id}/unbreak")
async def unbreak(record_id: str, page: Reviewer) -> Response:
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    actor, reason = page.actor, form.get("reason")
    done = await run_in_threadpool(
        page.call, lambda: reviewing.unbreak(page.context, actor, record_id, reason=reason)
    )
    return page.redirect(f"/ui/people/{done.golden_id}", done="unbroken", event=done.audit_event_id)


@router.post("/people/{golden_id}/join")
async def join(golden_id: str, page: Reviewer) -> Response:
    """Join another source record (given by its id) into this person."""
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    other = (form.get("record_id") or "").strip()
    if not other:
        raise PageError(400, page._("That did not work"), page._("Give the id of a record."))
    actor, reason = page.actor, form.get("reason")
    done = await run_in_threadpool(
        page.call,
        lambda: reviewing.join(page.context, actor, other, golden_id=golden_id, reason=reason),
    )
    return page.redirect(f"/ui/people/{golden_id}", done="joined", event=done.audit_event_id)
