"""What every page handler shares: who is asking (their browser session and role), in which
language, rendering a template with the navigation, CSRF checks, and errors as pages.

A handler takes a :class:`Page` through one of the dependencies :data:`SignedIn`,
:data:`Reviewer`, :data:`Auditor` and :data:`Admin`. Without a session the browser is sent
to the sign-in page (and back afterwards); in the wrong role it gets a 403 page, and the
refusal is audited (``access-denied``), as on the admin API. ``admin`` holds every role.

A state-changing request (a ``POST`` form) calls :meth:`Page.check_csrf` first: a missing or
stale CSRF token (a form from an ended session) gets a 403 page that says so and changes
nothing. A use case's :class:`~clientregistry.registry.actor.Refused` becomes a page with
the message translated from its ``code`` (:mod:`clientregistry.ui.refusals`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from clientregistry.api.deps import request_context
from clientregistry.registry import reviewing, statistics
from clientregistry.registry.actor import Actor, Reading, Refused, audit_read, audit_refusal
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.review import QueueCounts
from clientregistry.store.enums import Role
from clientregistry.ui import session as browser
from clientregistry.ui.i18n import LANGUAGE_COOKIE, Texts, choose
from clientregistry.ui.refusals import refusal_message
from clientregistry.ui.templating import render

_T = TypeVar("_T")
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 1_048_576
"""The largest form a page sends (the pair tester's two pasted Patients fit)."""
MAX_FIELDS = 200
MAX_LOGIN_FORM_BYTES = 16_384


class LoginRequired(Exception):
    """No (valid) browser session: go to the sign-in page, then back to ``next_url``."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url
        super().__init__(next_url)


class PageError(Exception):
    """A page that answers with an error: status, translated title and message."""

    def __init__(self, status: int, title: str, message: str) -> None:
        self.status = status
        self.title = title
        self.message = message
        super().__init__(message)


@dataclass
class Page:
    """One request of a page: the registry, the person, their language."""

    request: Request
    context: RegistryContext
    session: browser.BrowserSession | None
    texts: Texts

    @property
    def language(self) -> str:
        return self.texts.language

    @property
    def role(self) -> Role | None:
        return self.session.user.role if self.session else None

    def has(self, *roles: Role) -> bool:
        """Whether the person holds one of ``roles`` (admin holds every role)."""
        role = self.role
        return role is not None and (role is Role.ADMIN or role in roles)

    @property
    def actor(self) -> Actor:
        assert self.session is not None
        return self.session.actor(self.request)

    def _(self, message: str, **values: Any) -> str:
        return self.texts.gettext(message, **values)

    def badges(self) -> QueueCounts | None:
        """The queue counts the navigation shows reviewers."""
        if not self.has(Role.REVIEWER):
            return None
        return reviewing.queue_sizes(self.context)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page of ``template`` with the layout's values (person, navigation, CSRF)."""
        session = self.session
        values.update(
            page=self,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            badges=self.badges() if session else None,
            Role=Role,
            path=self.request.url.path,
            query=self.request.url.query,
        )
        html = render(self.language, template, values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def redirect(self, url: str, **params: Any) -> RedirectResponse:
        """303 See Other (after a form: a reload does not send it again)."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)

    def number(self, raw: str | None) -> int:
        """A number in the address (an item's, an event's, a version's): a 404 page unless
        it is a whole number the database can hold."""
        if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise PageError(
                404, self._("Page not found"), self._("There is no page at this address.")
            )
        return int(raw)

    def check_csrf(self, submitted: str | None) -> None:
        """403 unless the form carries this session's CSRF token (and came from here)."""
        assert self.session is not None
        if not browser.check_csrf(self.request, self.session, submitted):
            self._audit_refusal("csrf-refused")
            raise PageError(
                403,
                self._("This form has expired"),
                self._(
                    "The page you sent this from belongs to an earlier session, or to another "
                    "site. Nothing was changed. Go back, reload the page and try again."
                ),
            )

    def _audit_refusal(self, event_type: str) -> None:
        actor = self.actor
        reading = Reading(
            event_type, detail={"path": self.request.url.path, "role": actor.role.value}
        )
        audit_refusal(self.context, actor, reading)

    def call(self, use_case: Callable[[], _T]) -> _T:
        """Run a use case; its refusal becomes an error page in this language."""
        try:
            return use_case()
        except Refused as refused:
            raise PageError(
                refused.status,
                self._("That did not work"),
                refusal_message(self.texts, refused),
            ) from None

    def audit(self, event_type: str, **detail: Any) -> None:
        """Audit a page read that no use case audits."""
        audit_read(self.context, self.actor, Reading(event_type, detail=detail))


def _page(request: Request) -> Page:
    context = request_context(request)
    statistics.warm(context)  # the dashboard's first figures, computed while people sign in
    session = browser.current_session(request, context)
    language = choose(
        session.user.language if session else None,
        request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("accept-language"),
    )
    return Page(request, context, session, Texts(language))


def _next_url(request: Request) -> str:
    url = request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


def any_page(request: Request) -> Page:
    """A dependency: the page, signed in or not."""
    return _page(request)


def signed_in(request: Request) -> Page:
    """A dependency: the page of a signed-in person (else the sign-in page)."""
    page = _page(request)
    if page.session is None:
        raise LoginRequired(_next_url(request) if request.method == "GET" else "/ui/")
    return page


def with_role(*roles: Role) -> Callable[[Request], Page]:
    """A dependency: the page of a signed-in person holding one of ``roles``."""

    def check(request: Request) -> Page:
        page = signed_in(request)
        if not page.has(*roles):
            page._audit_refusal("access-denied")
            raise PageError(
                403,
                page._("Not allowed"),
                page._("Your role does not allow this page or action."),
            )
        return page

    return check


AnyPage = Annotated[Page, Depends(any_page)]
SignedIn = Annotated[Page, Depends(signed_in)]
Reviewer = Annotated[Page, Depends(with_role(Role.REVIEWER))]
Auditor = Annotated[Page, Depends(with_role(Role.AUDITOR))]
Admin = Annotated[Page, Depends(with_role(Role.ADMIN))]


async def _read_form(request: Request, limit: int) -> dict[str, str]:
    """A request's form fields (``application/x-www-form-urlencoded``, at most ``limit``
    bytes and :data:`MAX_FIELDS` fields; the last value of each): a 413, 415 or 400 page
    otherwise, before anything is parsed."""
    texts = Texts(
        choose(None, request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))
    )
    title = texts.gettext("That did not work")
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip()
    if not media and request.headers.get("content-length", "0") == "0":
        return {}  # an empty form (a button alone)
    if media.lower() != FORM:
        raise PageError(415, title, texts.gettext("Send the page's form."))
    too_large = PageError(413, title, texts.gettext("The form is too large."))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return dict(
            parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        )
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, title, texts.gettext("Send the page's form.")) from None


async def form_fields(request: Request) -> dict[str, str]:
    """A dependency: the page's form (after the person's dependency, which comes first in a
    handler's arguments: nobody makes the server read a body before being let in)."""
    return await _read_form(request, MAX_FORM_BYTES)


async def login_fields(request: Request) -> dict[str, str]:
    """A dependency: the sign-in form (anyone may send it: at most
    :data:`MAX_LOGIN_FORM_BYTES`)."""
    return await _read_form(request, MAX_LOGIN_FORM_BYTES)


async def upload_form(
    page: Page, request: Request, limit: int, max_field: int = 1024
) -> tuple[dict[str, str], UploadFile | None]:
    """A form that may carry a file (``multipart/form-data``; the same form without its
    file, urlencoded, is read too, to be refused after its CSRF check): its text fields
    (stripped, at most ``max_field`` characters each) and its file (``file``), at most
    ``limit`` bytes in all, declared in ``Content-Length`` (the server reads no more than that).
    A 400, 411, 413 or 415 page otherwise."""
    title = page._("That did not work")
    problem = PageError(400, title, page._("Send the page's form."))
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media not in ("multipart/form-data", FORM):
        raise PageError(415, title, problem.message)
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        # A browser always declares a form's length; a body of undeclared length (chunked)
        # would be spooled to disk whatever its size.
        raise PageError(411, title, problem.message)
    if int(declared) > (limit if media != FORM else MAX_FORM_BYTES):
        raise PageError(413, title, page._("The file is too large."))
    try:
        form = await request.form(max_files=1, max_fields=50, max_part_size=max_field + 1024)
    except (MultiPartException, HTTPException):
        raise problem from None
    fields: dict[str, str] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value.strip()[:max_field]
        elif key == "file":
            upload = value
    return fields, upload


FormFields = Annotated[dict[str, str], Depends(form_fields)]
LoginFields = Annotated[dict[str, str], Depends(login_fields)]


def login_redirect(error: LoginRequired) -> Response:
    return RedirectResponse(f"/ui/login?next={quote(error.next_url, safe='')}", status_code=303)


def error_page(request: Request, error: PageError) -> Response:
    page = _page(request)
    return page.render("error.html", status=error.status, title=error.title, message=error.message)
