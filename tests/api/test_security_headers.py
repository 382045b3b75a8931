"""Security headers (HSTS, CSP, nosniff, no-store ...) on every kind of answer of the running
server, and the middleware keeping a header a route set itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from clientregistry.api.security_headers import (
    API_CSP,
    DOCS_CSP,
    HSTS_MAX_AGE,
    SECURITY_HEADERS,
    SecurityHeaders,
)

EXPECTED = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}


def _assert_secured(response: httpx.Response, csp: str = API_CSP) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert response.headers["content-security-policy"] == csp
    assert response.headers.get_list("strict-transport-security") == [
        f"max-age={HSTS_MAX_AGE}; includeSubDomains"
    ]


@pytest.mark.parametrize(
    ("system", "method", "path", "status"),
    [
        ("openmrs", "GET", "/fhir/metadata", 200),
        ("openmrs", "GET", "/fhir/Patient/no-such-record", 404),
        (None, "GET", "/fhir/Patient/x", 401),
        (None, "GET", "/admin/queues", 401),
        (None, "GET", "/nowhere", 404),
        (None, "DELETE", "/fhir/metadata", 405),
        (None, "GET", "/openapi.json", 200),
    ],
)
def test_every_answer_carries_the_headers(
    registry_server: Any, system: str | None, method: str, path: str, status: int
) -> None:
    client = registry_server.client(system) if system else registry_server.new_client()
    response = client.request(method, path)
    assert response.status_code == status, response.text
    _assert_secured(response)


def test_a_submission_is_not_cached(registry_server: Any) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "hdr-1"}],
        "name": [{"family": "Headerova", "given": ["Ada"]}],
    }
    response = registry_server.submit("openmrs", patient)
    assert response.status_code in (200, 201), response.text
    _assert_secured(response)


def test_the_api_documentation_page_may_load_swagger(registry_server: Any) -> None:
    response = registry_server.new_client().get("/docs")
    assert response.status_code == 200
    _assert_secured(response, DOCS_CSP)
    # what DOCS_CSP allows is what the page loads: the registry's own files, no CDN
    assert "cdn.jsdelivr.net" not in response.text and "<script>" not in response.text
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in response.text


def test_a_header_the_route_set_is_kept() -> None:
    async def own(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"cache-control", b"max-age=60"), (b"content-security-policy", b"img-src *")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/own", "headers": []}
    # in a thread of its own: a browser test before this one may leave a loop running here
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, SecurityHeaders(own)(scope, receive, send)).result()
    headers = [(k.decode(), v.decode()) for k, v in sent[0]["headers"]]
    assert [v for k, v in headers if k == "cache-control"] == ["max-age=60"]
    assert [v for k, v in headers if k == "content-security-policy"] == ["img-src *"]
    assert ("x-frame-options", "DENY") in headers
    assert sent[1]["body"] == b"x"
