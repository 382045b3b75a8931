"""The decision rules in force, readably, and the pair tester: two stored records (by id) or
two pasted Patients, scored and explained field by field."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from clientregistry.registry import rules_view
from clientregistry.ui.pages import Page, PageError, Reviewer

router = APIRouter(prefix="/ui/rules")
MAX_PASTED = 200_000
"""Longest Patient a person may paste (characters)."""


@router.get("")
def rules(page: Reviewer) -> Response:
    view = page.call(lambda: rules_view.rules_view(page.context, page.actor))
    document = orjson.dumps(view.document, option=orjson.OPT_INDENT_2).decode()
    return page.render("rules.html", view=view, document=document)


@router.get("/test")
def pair_form(page: Reviewer) -> Response:
    return page.render("pair_test.html", result=None, error=None, form={})


def _side(page: Page, form: dict[str, str], side: str) -> str | dict[str, Any]:
    record_id = form.get(f"{side}_record", "").strip()
    pasted = form.get(f"{side}_patient", "").strip()
    if record_id and not pasted:
        return record_id[:64]
    if pasted and not record_id:
        if len(pasted) > MAX_PASTED:
            raise ValueError(page._("The pasted Patient is too long."))
        try:
            value = orjson.loads(pasted)
        except orjson.JSONDecodeError:
            raise ValueError(page._("The pasted text is not JSON.")) from None
        if not isinstance(value, dict):
            raise ValueError(page._("Paste one FHIR Patient (a JSON object)."))
        return value
    raise ValueError(page._("For each side, give a record id or paste a Patient (not both)."))


@router.post("/test")
async def pair_test(page: Reviewer) -> Response:
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    try:
        left, right = _side(page, form, "left"), _side(page, form, "right")
    except ValueError as error:
        return page.render("pair_test.html", status=400, result=None, error=str(error), form=form)
    actor = page.actor
    try:
        result = await run_in_threadpool(
            page.call, lambda: rules_view.compare_pair(page.context, actor, left, right)
        )
    except PageError as refused:
        return page.render(
            "pair_test.html", status=refused.status, result=None, error=refused.message, form=form
        )
    thresholds = {rs.name: rs for rs in page.context.matcher.rules.rule_sets}
    return page.render(
        "pair_test.html", result=result, error=None, form=form, thresholds=thresholds
    )
