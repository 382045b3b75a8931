"""Browser sessions over HTTP: the ``cr_session`` cookie, CSRF tokens, logging out.

The contract (also used by single sign-on's login callback):

* :func:`start_browser_session` — after a person is authenticated (a password through
  :func:`clientregistry.security.tokens.login`, or an identity provider): issue a session
  token (:mod:`clientregistry.security.browser_sessions`, a token of
  :mod:`clientregistry.security.tokens` that also ends when idle) and set it in the cookie
  ``cr_session`` (``HttpOnly; Secure; SameSite=Strict; Path=/``). :func:`adopt_login` does
  the same for a token :func:`~clientregistry.security.tokens.login` has just issued.
* :func:`current_session` — the person behind a request's cookie, or None (no cookie, an
  unknown, expired, revoked or idle session, a disabled account).
* :func:`check_csrf` — every state-changing request (``POST``) must carry the session's CSRF
  token (form field ``csrf_token`` or header ``X-CSRF-Token``), and, when the browser sends
  ``Origin``, come from this origin. The token is an HMAC of the session token: secret as the
  cookie is, different for every session, so a form of an ended session (a *stale* token)
  is refused.
* :func:`end_browser_session` — revoke the session, audit the logout, clear the cookie.

The login form, sent before there is a session, carries a token of its own that must match
the ``cr_login`` cookie (double submit), so another site cannot log a browser into an
account of its choosing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request, Response

from clientregistry.registry.actor import Actor
from clientregistry.registry.context import RegistryContext
from clientregistry.security import browser_sessions
from clientregistry.security.browser_sessions import SessionUser
from clientregistry.security.tokens import IssuedToken, now_utc
from clientregistry.store.models import User

COOKIE = "cr_session"
LOGIN_COOKIE = "cr_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_STATE_KEY = "browser_session"


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A signed-in person: their account, the session token and its CSRF token."""

    user: SessionUser
    token: str
    csrf: str

    def actor(self, request: Request) -> Actor:
        return Actor(self.user.username, self.user.role, client_address(request))


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def csrf_token_for(token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session token."""
    digest = hmac.new(token.encode("utf-8"), b"clientregistry-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def _seconds(issued: IssuedToken) -> int:
    return max(1, int((issued.expires_at - now_utc()).total_seconds()))


def start_browser_session(
    response: Response, context: RegistryContext, user: User
) -> BrowserSession:
    """Open a browser session for ``user`` (authenticated already) and set its cookie on
    ``response``; the caller audits the login. Raises ValueError for a disabled account."""
    issued = browser_sessions.open_session(context.sessions, user, context.settings.session_minutes)
    return _begin(response, issued)


def adopt_login(
    response: Response, context: RegistryContext, issued: IssuedToken
) -> BrowserSession:
    """Make the token a password login just issued a browser session, and set its cookie."""
    browser_sessions.adopt_token(context.sessions, issued)
    return _begin(response, issued)


def _begin(response: Response, issued: IssuedToken) -> BrowserSession:
    _set_cookie(response, COOKIE, issued.token, _seconds(issued))
    _clear_cookie(response, LOGIN_COOKIE)
    user = SessionUser(
        issued.user.id,
        issued.user.username,
        issued.user.role,
        issued.user.language,
        issued.expires_at,
    )
    return BrowserSession(user, issued.token, csrf_token_for(issued.token))


def current_session(request: Request, context: RegistryContext) -> BrowserSession | None:
    """The valid browser session the request's cookie names, or None (read once per
    request)."""
    if hasattr(request.state, _STATE_KEY):
        found: BrowserSession | None = getattr(request.state, _STATE_KEY)
        return found
    token = request.cookies.get(COOKIE)
    result = None
    if token:
        idle = timedelta(minutes=context.settings.idle_minutes)
        user = browser_sessions.session_user(context.sessions, token, idle)
        if user is not None:
            result = BrowserSession(user, token, csrf_token_for(token))
            request.state.agent = user.username
    setattr(request.state, _STATE_KEY, result)
    return result


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (when the browser sent one) is this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"https://{host}", f"http://{host}")


def check_csrf(request: Request, session: BrowserSession, submitted: str | None) -> bool:
    """Whether a state-changing request carries this session's CSRF token (the form field,
    or the header) and comes from this origin."""
    given = submitted or request.headers.get(CSRF_HEADER) or ""
    return same_origin(request) and hmac.compare_digest(
        given.encode("utf-8", "replace"), session.csrf.encode("ascii")
    )


def end_browser_session(request: Request, response: Response, context: RegistryContext) -> None:
    """Log out: revoke the session named by the cookie, audit it, clear the cookie."""
    token = request.cookies.get(COOKIE)
    if token:
        browser_sessions.close_session(
            context.sessions, token, source_address=client_address(request)
        )
    _clear_cookie(response, COOKIE)
    setattr(request.state, _STATE_KEY, None)


# ----------------------------------------------------------------------------- login form


def login_form_token(request: Request) -> tuple[str, bool]:
    """The token the login form carries, and whether it is new (then
    :func:`set_login_cookie` must go with the page)."""
    token = request.cookies.get(LOGIN_COOKIE)
    if token and len(token) <= 64:
        return token, False
    return secrets.token_urlsafe(24), True


def set_login_cookie(response: Response, token: str) -> None:
    """Set the ``cr_login`` cookie the login form's token must match."""
    _set_cookie(response, LOGIN_COOKIE, token, 3600)


def check_login_form(request: Request, submitted: str | None) -> bool:
    """Whether a login form's token matches its cookie (and the request is same-origin)."""
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    given = submitted or ""
    return (
        bool(cookie)
        and same_origin(request)
        and hmac.compare_digest(given.encode("utf-8", "replace"), cookie.encode("utf-8"))
    )
