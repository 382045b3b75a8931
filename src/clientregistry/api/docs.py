"""``/docs``: the admin API's Swagger UI, whole from the registry itself.

FastAPI's own page loads Swagger UI's script and style from a CDN, so an offline site got a
blank page. Here they come from the ``fastapi-offline`` package (which ships Swagger UI's
files and keeps them current), served under ``/docs/assets``, and the page starts Swagger UI
from a script of its own (``/docs/swagger-init.js``) rather than an inline one: the page's
Content-Security-Policy (``api/security_headers.py``) then lets scripts and styles come from
this server only.
"""

from __future__ import annotations

import json
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS = "/docs"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{docs}/assets/swagger-ui.css">
<link rel="icon" href="{docs}/assets/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{docs}/assets/swagger-ui-bundle.js"></script>
<script src="{docs}/swagger-init.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` (create the application with ``docs_url=None``)."""
    app.mount(f"{DOCS}/assets", StaticFiles(directory=ASSETS), name="docs-assets")
    page = _PAGE.format(title=f"{app.title} — API", docs=DOCS)

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(f"{DOCS}/swagger-init.js", include_in_schema=False)
    async def swagger_init() -> Response:
        options = {
            "url": app.openapi_url or "/openapi.json",
            "dom_id": "#swagger-ui",
            "layout": "BaseLayout",
            "deepLinking": True,
            "showExtensions": True,
            "showCommonExtensions": True,
        }
        script = (
            f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(options)}, "
            "{presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}"
            "));\n"
        )
        return Response(script, media_type="text/javascript")
