"""The decision rules in force, readably (reviewers, auditors and admins), and the pair
tester: two stored records (by id) or two pasted Patients, scored and explained field by
field (reviewers and admins).

Admins change the rules here, through the use cases of the admin API's ``/admin/rules``: a
rules file, typed or uploaded, is checked with the messages of ``clientregistry rules
check``; a valid one is stored as a version (audited) and re-matched in a dry run, whose
report (persons merged and split, records moving, review items opened) comes before the
button that puts it in force; the versions list puts an earlier version back. Re-matches
are jobs of the server's job runner; their pages follow them as an upload's page does."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from clientregistry.registry import jobs, rematch, rules_store, rules_view
from clientregistry.registry.rematch import RematchStatus
from clientregistry.store.enums import JobOrigin, JobState, Role
from clientregistry.ui.pages import (
    Admin,
    FormFields,
    Page,
    PageError,
    Reviewer,
    upload_form,
    with_role,
)
from clientregistry.ui.vocabulary import word

router = APIRouter(prefix="/ui/rules")
MAX_PASTED = 200_000
"""Longest Patient a person may paste (characters)."""


Reader = Annotated[Page, Depends(with_role(Role.REVIEWER, Role.AUDITOR))]
"""Reviewers, auditors and admins: the rules, read only."""
REFRESH_SECONDS = 3


@router.get("")
def rules(page: Reader) -> Response:
    view = page.call(lambda: rules_view.rules_view(page.context, page.actor))
    document = orjson.dumps(view.document, option=orjson.OPT_INDENT_2).decode()
    return page.render("rules.html", view=view, document=document)


# ----------------------------------------------------------------------------- changing


def _current_document(page: Page) -> str:
    view = rules_view.rules_view(page.context, page.actor)
    return orjson.dumps(view.document, option=orjson.OPT_INDENT_2).decode()


@router.get("/edit")
def edit_form(page: Admin) -> Response:
    return page.render(
        "rules_edit.html", content=_current_document(page), messages=None, ok=None, note=""
    )


def _check_and_store(page: Page, fields: dict[str, str], upload: Any) -> Response:
    page.check_csrf(fields.get("csrf_token"))
    note = fields.get("note") or None
    if upload is not None and upload.filename:
        upload.file.seek(0)
        content: bytes | str = upload.file.read(rules_store.MAX_RULES_BYTES + 1)
        source = upload.filename[:200]
    else:
        content = fields.get("content", "")
        source = "web UI"
    if not content:
        raise PageError(
            400, page._("That did not work"), page._("Type the rules or choose a file.")
        )
    checked = rules_store.check_rules(content, source)
    shown = content if isinstance(content, str) else content.decode("utf-8", "replace")
    if not checked.ok:
        return page.render(
            "rules_edit.html",
            status=400,
            content=shown,
            messages=checked.messages(),
            ok=False,
            note=note or "",
        )
    actor = page.actor
    version = page.call(lambda: rules_store.store_rules(page.context, actor, content, source, note))
    job_id = page.call(
        lambda: rematch.start_rematch(
            page.context, actor, version.id, dry_run=True, origin=JobOrigin.SERVER
        )
    )
    return page.redirect(f"/ui/rules/rematches/{job_id}", done="checked")


@router.post("/check")
async def check(request: Request, page: Admin) -> Response:
    """Check a rules file (typed or uploaded); a valid one is stored as a version and
    re-matched in a dry run."""
    limit = rules_store.MAX_RULES_BYTES + 65_536
    fields, upload = await upload_form(page, request, limit, rules_store.MAX_RULES_BYTES)
    try:
        return await run_in_threadpool(_check_and_store, page, fields, upload)
    finally:
        if upload is not None:
            await upload.close()


def _versions_page(page: Page) -> Response:
    actor = page.actor
    versions = page.call(lambda: rules_store.list_versions(page.context, actor))
    _, recent = rematch.list_rematches(page.context, 0, 20)
    return page.render(
        "rules_versions.html",
        versions=versions,
        previous=rules_store.previous_version(page.context),
        rematches=recent,
        done=page.request.query_params.get("done"),
    )


@router.get("/versions")
def versions(page: Admin) -> Response:
    return _versions_page(page)


@router.get("/versions/{version_id}")
def version(version_id: str, page: Admin) -> Response:
    number = page.number(version_id)
    actor = page.actor
    view, content = page.call(lambda: rules_store.get_version(page.context, actor, number))
    return page.render("rules_version.html", version=view, content=content)


def _start(page: Page, version_id: int, dry_run: bool) -> Response:
    actor = page.actor
    job_id = page.call(
        lambda: rematch.start_rematch(
            page.context, actor, version_id, dry_run=dry_run, origin=JobOrigin.SERVER
        )
    )
    return page.redirect(f"/ui/rules/rematches/{job_id}", done="started")


@router.post("/versions/{version_id}/dry-run")
def dry_run(version_id: str, page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    return _start(page, page.number(version_id), dry_run=True)


@router.post("/versions/{version_id}/activate")
def activate(version_id: str, page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    return _start(page, page.number(version_id), dry_run=False)


@router.post("/restore")
def restore(page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    previous = rules_store.previous_version(page.context)
    if previous is None:
        raise PageError(
            409, page._("That did not work"), page._("There are no earlier rules to restore.")
        )
    return _start(page, previous, dry_run=False)


def _rematch(page: Page, raw: str) -> RematchStatus:
    number = page.number(raw)
    return page.call(lambda: rematch.rematch_status(page.context, number))


def _phase_text(page: Page, status: RematchStatus) -> str:
    if status.state is JobState.QUEUED:
        return page._("Waiting to start.")
    return page._(
        "Step: %(phase)s; %(records)s records matched again so far.",
        phase=word(page.texts, "phase", status.phase),
        records=page.texts.number(status.summary.records),
    )


@router.get("/rematches/{job_id}")
def rematch_page(job_id: str, page: Admin) -> Response:
    status = _rematch(page, job_id)
    page.audit("rematch-read", job=status.id)
    running = status.state in jobs.UNFINISHED
    state = page.context.in_force
    return page.render(
        "rematch.html",
        job=status,
        running=running,
        refresh=REFRESH_SECONDS if running else None,
        phase_text=_phase_text(page, status),
        active_version=None if state is None else state.active.version,
        done=page.request.query_params.get("done"),
    )


@router.get("/rematches/{job_id}/progress")
def rematch_progress(job_id: str, page: Admin) -> Response:
    """A re-match's progress as JSON, for the progress bar's script."""
    status = _rematch(page, job_id)
    body = {
        "state": status.state.value,
        "done": status.summary.records,
        "total": None,
        "text": _phase_text(page, status),
        "finished": status.state not in jobs.UNFINISHED,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/rematches/{job_id}/report.csv")
def rematch_report(job_id: str, page: Admin) -> Response:
    """Every change of a re-match, as CSV (the admin API's report)."""
    status = _rematch(page, job_id)
    page.audit("rematch-read", job=status.id)
    return StreamingResponse(
        rematch.report_csv(page.context, status.id),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="rematch-{status.id}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/rematches/{job_id}/cancel")
def cancel_rematch(job_id: str, page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    number = page.number(job_id)
    actor = page.actor
    page.call(lambda: rematch.cancel_rematch(page.context, actor, number))
    return page.redirect(f"/ui/rules/rematches/{number}", done="cancelled")


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
def pair_test(page: Reviewer, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    try:
        left, right = _side(page, form, "left"), _side(page, form, "right")
    except ValueError as error:
        return page.render("pair_test.html", status=400, result=None, error=str(error), form=form)
    actor = page.actor
    try:
        result = page.call(lambda: rules_view.compare_pair(page.context, actor, left, right))
    except PageError as refused:
        return page.render(
            "pair_test.html", status=refused.status, result=None, error=refused.message, form=form
        )
    thresholds = {rs.name: rs for rs in page.context.matcher.rules.rule_sets}
    return page.render(
        "pair_test.html", result=result, error=None, form=form, thresholds=thresholds
    )
