"""``/docs`` in a real browser with the network off: Swagger UI comes whole from the
registry (no CDN), renders the admin API, and asks for nothing elsewhere.

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright; every
request to anything but the registry is aborted and recorded, as on a site with no way out.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from registry_servers import RegistryServer

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(launch_server: Callable[..., RegistryServer]) -> RegistryServer:
    return launch_server("sqlite")


def test_swagger_ui_renders_with_the_network_off(server: RegistryServer) -> None:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: make test installs it (.ci/debian-packages)")
    from playwright.sync_api import Route, sync_playwright

    elsewhere: list[str] = []

    def only_the_registry(route: Route) -> None:
        url = route.request.url
        if url.startswith(server.base_url):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.route("**/*", only_the_registry)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(  # a Content-Security-Policy refusal, among others
                "console", lambda m: errors.append(m.text) if m.type == "error" else None
            )
            response = page.goto(f"{server.base_url}/docs")
            assert response is not None and response.status == 200
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            assert "clientregistry" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector(".opblock", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any(p.startswith("/auth/token") for p in paths), paths
            assert any(p.startswith("/admin/") for p in paths), paths
        finally:
            browser.close()
    assert elsewhere == []
    assert errors == []


def test_the_assets_are_served_by_the_registry(server: RegistryServer) -> None:
    client = server.new_client()
    page = client.get("/docs").text
    assert "cdn" not in page.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/assets/{asset}" in page
        response = client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
