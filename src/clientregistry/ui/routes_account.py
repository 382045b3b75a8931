"""Signing in and out, and one's own account: password and language.

``GET/POST /ui/login`` checks the password with the same use case as ``POST /auth/token``
(:func:`clientregistry.security.tokens.login`: growing delays after repeated failures, every
attempt audited) and opens a browser session; ``POST /ui/logout`` ends it.
``GET /ui/language`` sets the sign-in page's language (a cookie); a signed-in person chooses
theirs on ``/ui/account``, which also changes their password.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from clientregistry.registry import accounts
from clientregistry.security.tokens import IssuedToken, login
from clientregistry.ui import session as browser
from clientregistry.ui.i18n import LANGUAGE_COOKIE, LANGUAGES
from clientregistry.ui.pages import AnyPage, FormFields, LoginFields, PageError, SignedIn

router = APIRouter(prefix="/ui")


def safe_next(url: str | None) -> str:
    """Where to go after signing in: a path of the UI, never another site."""
    if url and url.startswith("/ui/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/ui/"


@router.get("/login")
def login_form(page: AnyPage, next: str | None = None) -> Response:
    if page.session is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(page, safe_next(next), None, "")


def _login_page(page: AnyPage, target: str, error: str | None, username: str) -> Response:
    token, new = browser.login_form_token(page.request)
    response = page.render(
        "login.html",
        status=401 if error else 200,
        next=target,
        error=error,
        username=username,
        login_token=token,
    )
    if new:
        browser.set_login_cookie(response, token)
    return response


@router.post("/login")
def login_submit(page: AnyPage, form: LoginFields) -> Response:
    target = safe_next(form.get("next"))
    username = form.get("username", "")[:256]
    password = form.get("password", "")[:1024]
    if not browser.check_login_form(page.request, form.get("login_token")):
        raise PageError(
            403,
            page._("This form has expired"),
            page._("Reload the sign-in page and try again."),
        )
    error = None
    if not username or not password:
        error = page._("Give your username and password.")
    else:
        context = page.context
        outcome = login(
            context.sessions,
            username,
            password,
            source_address=browser.client_address(page.request),
            minutes=context.settings.session_minutes,
        )
        if isinstance(outcome, IssuedToken):
            response = RedirectResponse(target, status_code=303)
            browser.adopt_login(response, context, outcome)
            return response
        if outcome.locked:
            minutes = max(1, (outcome.retry_after + 59) // 60)
            error = page.texts.ngettext(
                "Too many failed sign-ins: try again in %(num)d minute.",
                "Too many failed sign-ins: try again in %(num)d minutes.",
                minutes,
            )
        else:
            error = page._("Wrong username or password.")
    return _login_page(page, target, error, username)


@router.post("/logout")
def logout(page: SignedIn, form: FormFields) -> Response:
    page.check_csrf(form.get(browser.CSRF_FIELD))
    response = RedirectResponse("/ui/login", status_code=303)
    browser.end_browser_session(page.request, response, page.context)
    return response


@router.get("/language")
def choose_language(
    page: AnyPage,
    lang: str,
    next: str | None = None,
) -> Response:
    """The sign-in page's language switch (a signed-in person uses their account page)."""
    response = RedirectResponse(
        safe_next(next) if next != "/ui/login" else "/ui/login", status_code=303
    )
    if lang in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, lang, max_age=365 * 86400, path="/", secure=True, samesite="strict"
        )
    return response


@router.get("/account")
def account(page: SignedIn, done: str | None = None) -> Response:
    return page.render("account.html", done=done, error=None)


@router.post("/account/password")
def change_password(page: SignedIn, form: FormFields) -> Response:
    page.check_csrf(form.get(browser.CSRF_FIELD))
    current, new = form.get("current_password", ""), form.get("new_password", "")
    if new != form.get("confirm_password", ""):
        return page.render(
            "account.html", status=400, done=None, error=page._("The new passwords differ.")
        )
    actor = page.actor
    page.call(lambda: accounts.change_own_password(page.context, actor, current, new))
    # Every session of the account ended: sign in again with the new password.
    response = RedirectResponse("/ui/login?next=/ui/account", status_code=303)
    response.delete_cookie(browser.COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/account/language")
def change_language(page: SignedIn, form: FormFields) -> Response:
    page.check_csrf(form.get(browser.CSRF_FIELD))
    chosen = form.get("language") or None
    actor = page.actor
    page.call(lambda: accounts.set_language(page.context, actor, chosen))
    response = page.redirect("/ui/account", done="language")
    if chosen in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, chosen, max_age=365 * 86400, path="/", secure=True, samesite="strict"
        )
    else:
        response.delete_cookie(LANGUAGE_COOKIE, path="/", secure=True, samesite="strict")
    return response
