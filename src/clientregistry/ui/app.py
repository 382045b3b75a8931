"""Mounting the web UI on the registry's application: its pages under ``/ui/``, its assets
under ``/ui/static/`` (inside the package: nothing from the network), ``/`` sending a
browser there, its security headers, and its errors as pages."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from clientregistry.ui import (
    routes_account,
    routes_admin,
    routes_dashboard,
    routes_imports,
    routes_people,
    routes_review,
    routes_rules,
)
from clientregistry.ui.headers import UiHeaders
from clientregistry.ui.pages import (
    AnyPage,
    LoginRequired,
    PageError,
    error_page,
    login_redirect,
)

_fallback = APIRouter()


@_fallback.get("/", include_in_schema=False)
def root() -> Response:
    """A person's browser at the registry's address goes to the UI."""
    return RedirectResponse("/ui/", status_code=303)


@_fallback.get("/ui", include_in_schema=False)
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=303)


@_fallback.api_route("/ui/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
def not_found(rest: str, page: AnyPage) -> Response:
    raise PageError(404, page._("Page not found"), page._("There is no page at this address."))


def mount(app: FastAPI) -> None:
    """Add the web UI to ``app`` (include after the API's routers)."""
    app.add_middleware(UiHeaders)
    app.mount(
        "/ui/static",
        StaticFiles(packages=[("clientregistry.ui", "static")]),
        name="ui-static",
    )
    for module in (
        routes_account,
        routes_dashboard,
        routes_people,
        routes_review,
        routes_rules,
        routes_imports,
        routes_admin,
    ):
        app.include_router(module.router, include_in_schema=False)
    app.include_router(_fallback)

    async def login_required(request: Request, error: Exception) -> Response:
        assert isinstance(error, LoginRequired)
        return login_redirect(error)

    async def page_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, PageError)
        from fastapi.concurrency import run_in_threadpool

        return await run_in_threadpool(error_page, request, error)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(PageError, page_error)
