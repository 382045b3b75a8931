"""Accounts (admins) and the audit trail (auditors and admins): list, add, disable or enable,
change role, reset a password; filter the trail by who, what, outcome, date and person, see
an entry with its before and after, and revert a link action (reviewers and admins, as on
the API)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from clientregistry.registry import accounts, audit_trail, reviewing
from clientregistry.registry.accounts import UserChange
from clientregistry.registry.audit_trail import AuditQuery
from clientregistry.store.enums import Role
from clientregistry.ui.pages import Admin, Auditor, FormFields, Page, PageError, Reviewer

router = APIRouter(prefix="/ui")
PAGE_SIZE = 50
COUNT_LIMIT = 10_000
"""The audit trail's entries are counted up to this many ("more than" past it)."""
MAX_OFFSET = 1_000_000


def _event_id(raw: str | None) -> int | None:
    """A keyset bound of the audit pager (an event id), or None."""
    return int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


# ----------------------------------------------------------------------------- users


@router.get("/users")
def users_page(page: Admin, done: str | None = None) -> Response:
    items = page.call(lambda: accounts.list_accounts(page.context, page.actor))
    return page.render("users.html", users=items, done=done, roles=list(Role))


def _role(page: Page, value: str | None) -> Role:
    try:
        return Role(value or "")
    except ValueError:
        raise PageError(400, page._("That did not work"), page._("Choose a role.")) from None


@router.post("/users")
def add_user(page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    role = _role(page, form.get("role"))
    username, password = form.get("username", "").strip(), form.get("password", "")
    actor = page.actor
    page.call(lambda: accounts.add_account(page.context, actor, username, password, role))
    return page.redirect("/ui/users", done="added")


@router.post("/users/{username}")
def change_user(username: str, page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    action = form.get("action")
    if action == "role":
        change = UserChange(role=_role(page, form.get("role")))
    elif action in ("disable", "enable"):
        change = UserChange(disabled=action == "disable")
    elif action == "password":
        password = form.get("password", "")
        if not password:
            raise PageError(400, page._("That did not work"), page._("Give a new password."))
        change = UserChange(password=password[:1024])
    else:
        raise PageError(400, page._("That did not work"), page._("Choose an action."))
    actor = page.actor
    page.call(lambda: accounts.change_account(page.context, actor, username, change))
    return page.redirect("/ui/users", done=action)


# ----------------------------------------------------------------------------- audit


def _day(value: str | None, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None
    moment = datetime.combine(day, time.min, UTC)
    return moment.replace(day=day.day) if not end else datetime.combine(day, time.max, UTC)


@router.get("/audit")
def audit_page(
    page: Auditor,
    agent: str | None = None,
    event_type: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    person: str | None = None,
    entity: str | None = None,
    offset: str | None = None,
    before: str | None = None,
    after: str | None = None,
) -> Response:
    start = min(max(0, int(offset)), MAX_OFFSET) if offset and offset.isdigit() else 0
    query = AuditQuery(
        agent=agent or None,
        event_type=event_type or None,
        outcome=int(outcome) if outcome in ("0", "4", "8", "12") else None,
        since=_day(since, end=False),
        until=_day(until, end=True),
        person=person or None,
        entity=entity or None,
    )
    found = page.call(
        lambda: audit_trail.audit_page(
            page.context,
            page.actor,
            query,
            start,
            PAGE_SIZE,
            before=_event_id(before),
            after=_event_id(after),
            count_limit=COUNT_LIMIT,
        )
    )
    filters = {
        "agent": agent or "",
        "event_type": event_type or "",
        "outcome": outcome or "",
        "since": since or "",
        "until": until or "",
        "person": person or "",
        "entity": entity or "",
    }
    base = "/ui/audit?" + "".join(f"{k}={v}&" for k, v in filters.items() if v)
    return page.render("audit.html", found=found, filters=filters, base=base)


@router.get("/audit/{event_id}")
def audit_event(event_id: str, page: Auditor, done: str | None = None) -> Response:
    number = page.number(event_id)
    event = page.call(lambda: audit_trail.audit_event(page.context, page.actor, number))
    resource = orjson.dumps(event.resource, option=orjson.OPT_INDENT_2).decode()
    changes = (event.detail or {}).get("changes")
    return page.render(
        "audit_event.html", event=event, resource=resource, changes=changes, done=done
    )


@router.post("/audit/{event_id}/revert")
def revert(event_id: str, page: Reviewer, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    actor, reason = page.actor, form.get("reason")
    number = page.number(event_id)
    done = page.call(lambda: reviewing.revert(page.context, actor, number, reason=reason))
    back = form.get("back", "")
    if back.startswith("/ui/people/"):
        return page.redirect(back, done="reverted", event=done.audit_event_id)
    return page.redirect(f"/ui/audit/{done.audit_event_id}", done="reverted")
