"""The web UI's security headers (ui.headers): set on every page and asset under /ui and on
/, replacing a stricter policy an outer layer may have set for JSON answers, and leaving the
API's answers alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from clientregistry.ui.headers import CSP, UiHeaders, is_ui_path


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-security-policy", b"default-src 'none'"), (b"x-a", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _headers(path: str) -> dict[bytes, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "path": path, "method": "GET", "headers": []}
    await UiHeaders(_app)(scope, receive, send)
    return dict(sent[0]["headers"])


def _run(path: str) -> dict[bytes, bytes]:
    """In a thread of its own: the browser tests' Playwright keeps a loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _headers(path)).result()


@pytest.mark.parametrize("path", ["/", "/ui", "/ui/", "/ui/people/x", "/ui/static/app.css"])
def test_ui_answers_get_the_ui_policy(path: str) -> None:
    headers = _run(path)
    assert headers[b"content-security-policy"] == CSP.encode()
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert b"unsafe-inline" not in headers[b"content-security-policy"]
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-a"] == b"1"


@pytest.mark.parametrize("path", ["/fhir/Patient", "/admin/queues", "/uix", "/docs"])
def test_other_answers_are_left_alone(path: str) -> None:
    assert not is_ui_path(path)
    headers = _run(path)
    assert headers[b"content-security-policy"] == b"default-src 'none'"
    assert b"x-frame-options" not in headers
