"""The review queues: potential matches, conflicts, and automatic links to confirm.

An item's page shows the record beside the candidate with the engine's explanation per field
and the score against the thresholds, and the decisions: same person (link), not the same
person (break), new person, keep (conflicts), skip. Each button has a keyboard shortcut
(``static/app.js``), and every decision goes on to the next item of the queue. An item
another reviewer decided meanwhile is refused with a message saying who and when.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from clientregistry.registry import reviewing
from clientregistry.registry.links import Resolution
from clientregistry.ui.pages import PageError, Reviewer

router = APIRouter(prefix="/ui/review")
PAGE_SIZE: Final = 25
DECISIONS: Final = {
    "same": Resolution.MOVE,
    "different": Resolution.NOT_A_MATCH,
    "new": Resolution.NEW,
    "keep": Resolution.KEEP,
}
"""The item page's buttons and the resolutions they make."""
QUEUES: Final = ("potential", "conflict", "auto")


def _offset(raw: str | None) -> int:
    try:
        return max(0, min(int(raw or 0), 1_000_000))
    except ValueError:
        return 0


@router.get("")
def overview(page: Reviewer) -> Response:
    counts = page.call(lambda: reviewing.queue_counts(page.context, page.actor))
    return page.render("review.html", counts=counts)


@router.get("/items/{issue_id}")
def item(
    issue_id: int,
    page: Reviewer,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    view = page.call(lambda: reviewing.issue_review(page.context, page.actor, issue_id))
    return page.render("review_item.html", review=view, done=done)


@router.get("/{kind}/next")
def next_item(kind: str, page: Reviewer, done: str | None = None) -> Response:
    """The oldest open item of a queue (or the queue's page when it is empty)."""
    if kind not in ("potential", "conflict"):
        raise PageError(404, page._("Page not found"), page._("There is no such queue."))
    found = reviewing.first_issue(page.context, kind)  # type: ignore[arg-type]
    if found is None:
        return page.redirect(f"/ui/review/{kind}", done=done or "empty")
    return page.redirect(f"/ui/review/items/{found}", done=done)


@router.post("/items/{issue_id}/decide")
async def decide(issue_id: int, page: Reviewer) -> Response:
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    choice = form.get("decision", "")
    kind = form.get("kind") if form.get("kind") in ("potential", "conflict") else "potential"
    following = form.get("next_id", "")
    if choice == "skip":
        if following.isdigit():
            return page.redirect(f"/ui/review/items/{following}")
        return page.redirect(f"/ui/review/{kind}")
    resolution = DECISIONS.get(choice)
    if resolution is None:
        raise PageError(400, page._("That did not work"), page._("Choose a decision."))
    actor, reason = page.actor, form.get("reason")
    await run_in_threadpool(
        page.call,
        lambda: reviewing.resolve(page.context, actor, issue_id, resolution, reason=reason),
    )
    return page.redirect(f"/ui/review/{kind}/next", done=choice)


@router.get("/auto/{record_id}")
def auto_item(
    record_id: str, page: Reviewer, done: Annotated[str | None, Query(max_length=32)] = None
) -> Response:
    view = page.call(lambda: reviewing.record(page.context, page.actor, record_id))
    return page.render(
        "review_auto.html", view=view, done=done, thresholds=reviewing.thresholds(page.context)
    )


@router.post("/auto/{record_id}/{action}")
async def act_on_auto(record_id: str, action: str, page: Reviewer) -> Response:
    """Confirm an automatic link, or break the record out."""
    form = await page.form()
    page.check_csrf(form.get("csrf_token"))
    actor, reason = page.actor, form.get("reason")
    if action == "confirm":
        use_case = reviewing.confirm
    elif action == "break":
        use_case = reviewing.break_record
    else:
        raise PageError(404, page._("Page not found"), page._("There is no page at this address."))
    await run_in_threadpool(
        page.call, lambda: use_case(page.context, actor, record_id, reason=reason)
    )
    return page.redirect("/ui/review/auto", done="confirmed" if action == "confirm" else "broken")


@router.get("/{kind}")
def queue(
    kind: str,
    page: Reviewer,
    offset: Annotated[str | None, Query(max_length=12)] = None,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    start = _offset(offset)
    if kind == "auto":
        auto = page.call(lambda: reviewing.auto_queue(page.context, page.actor, start, PAGE_SIZE))
        return page.render("queue.html", kind=kind, auto=auto, issues=None, done=done)
    if kind not in ("potential", "conflict"):
        raise PageError(404, page._("Page not found"), page._("There is no such queue."))
    issues = page.call(
        lambda: reviewing.issue_queue(page.context, page.actor, kind, start, PAGE_SIZE)  # type: ignore[arg-type]
    )
    return page.render("queue.html", kind=kind, auto=None, issues=issues, done=done)
