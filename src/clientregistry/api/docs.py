"""``/docs``: the admin API's Swagger UI, whole from the registry itself.

FastAPI's own page loads Swagger UI's script and style from a CDN, so an offline site got a
blank page. These come from the ``fastapi-offline`` package (which ships Swagger UI's files
and keeps them current), served under ``/docs/assets``; the page itself is FastAPI's.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS = "/docs"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` (create the application with ``docs_url=None``)."""
    app.mount(f"{DOCS}/assets", StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{DOCS}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS}/assets/swagger-ui.css",
            swagger_favicon_url=f"{DOCS}/assets/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT,
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
