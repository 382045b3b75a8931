"""What the security layers cost per request: ``python bench/security_overhead.py [--n 200000]``.

Drives, in process and side by side in one run, a bare ASGI app that answers at once and the
same app behind :class:`~clientregistry.api.security_headers.SecurityHeaders` and behind
:class:`~clientregistry.api.trusted_proxy.TrustedProxy` (a request from a trusted proxy, with
``X-Forwarded-For``, the costlier path), and times :func:`proxied_system` on a request without
the header (what every FHIR request now pays in ``request_system``), and the request limits
(:mod:`clientregistry.api.request_limits`, :mod:`clientregistry.api.body_guard`). Prints
microseconds per request, best of five rounds, for comparison with a submission's few
milliseconds (``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request

from clientregistry.api.body_guard import BodyGuard
from clientregistry.api.request_limits import RequestLimits
from clientregistry.api.security_headers import SecurityHeaders
from clientregistry.api.trusted_proxy import TrustedProxy, proxied_system
from clientregistry.settings import Settings

HEADERS = [(b"host", b"localhost"), (b"content-type", b"application/fhir+json")]


async def bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _ignore(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {"type": "http.request", "body": b""}


def _scope(client: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/fhir/metadata",
        "headers": headers,
        "client": (client, 50000),
        "scheme": "https",
        "query_string": b"",
    }


def _rounds(run: Callable[[], Coroutine[Any, Any, None]], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        asyncio.run(run())
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    proxy = ipaddress.ip_network("127.0.0.2/32")
    apps = {
        "bare app": (bare, _scope("127.0.0.1", HEADERS)),
        "SecurityHeaders": (SecurityHeaders(bare), _scope("127.0.0.1", HEADERS)),
        "TrustedProxy, untrusted peer": (TrustedProxy(bare, [proxy]), _scope("127.0.0.1", HEADERS)),
        "TrustedProxy, trusted peer + XFF": (
            TrustedProxy(bare, [proxy]),
            _scope("127.0.0.2", [*HEADERS, (b"x-forwarded-for", b"10.1.2.3")]),
        ),
        "RequestLimits (headers, NUL, HEAD)": (
            RequestLimits(bare, fastapi=FastAPI()),
            _scope("127.0.0.1", HEADERS),
        ),
        "BodyGuard, a /fhir request": (
            BodyGuard(bare, fastapi=FastAPI(), limit=lambda: 1 << 20),
            _scope("127.0.0.1", HEADERS),
        ),
    }
    results = {}
    for name, (app, scope) in apps.items():

        async def run(app: Any = app, scope: dict[str, Any] = scope) -> None:
            for _ in range(n):
                await app(dict(scope), _receive, _ignore)

        results[name] = _rounds(run, n)
    settings = Settings(data_dir=Path("."))

    async def lookup() -> None:
        for _ in range(n):
            proxied_system(Request(_scope("127.0.0.1", HEADERS)), settings)

    results["proxied_system (no header)"] = _rounds(lookup, n)
    base = results["bare app"]
    for name, micros in results.items():
        extra = (
            "" if name == "bare app" or name.startswith("proxied") else f" (+{micros - base:.2f})"
        )
        print(f"{name:36s} {micros:6.2f} µs/request{extra}")


if __name__ == "__main__":
    main()
