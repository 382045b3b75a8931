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
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clientregistry.api.deps import request_context
from clientregistry.registry import reviewing
from clientregistry.registry.actor import Actor, Reading, Refused, audit_read, audit_refusal
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.review import QueueCounts
from clientregistry.store.enums import Role
from clientregistry.ui import session as browser
from clientregistry.ui.i18n import LANGUAGE_COOKIE, Texts, choose
from clientregistry.ui.refusals import refusal_message
from clientregistry.ui.templating import render

_T = TypeVar("_T")


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

    async def form(self) -> dict[str, str]:
        """The request's form fields (the last value of each)."""
        data = await self.request.form(max_files=0, max_fields=200, max_part_size=1_048_576)
        return {k: v for k, v in data.items() if isinstance(v, str)}

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


def login_redirect(error: LoginRequired) -> Response:
    return RedirectResponse(f"/ui/login?next={quote(error.next_url, safe='')}", status_code=303)


def error_page(request: Request, error: PageError) -> Response:
    page = _page(request)
    return page.render("error.html", status=error.status, title=error.title, message=error.message)
