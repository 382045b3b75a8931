"""Fuzzing as a habit: schemathesis against the running server's OpenAPI description, a few
seconds per caller (``bench/fuzz.py`` runs the same for longer). No answer may be a 5xx, and
every status, content type and header must be one the description documents.

``fuzz-baseline.json`` lists failures accepted for now, each with the reason and an expiry
date (after which it fails again): 500s that issue 15's other half fixes in files it owns.

The fuzz runs against servers of its own, never the shared ``registry_server``: it signs in
with made-up credentials from 127.0.0.1, and five failures there hold every later sign-in
from that address back (the throttling works), which once failed other modules' fixtures.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from people import token_for

BENCH_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
BASELINE = Path(__file__).with_name("fuzz-baseline.json")
SECONDS_PER_CALLER = 6
SEED = 20261206


def _fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz", BENCH_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz = _fuzz_module()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_server(request: pytest.FixtureRequest, launch_server: Callable[..., Any]) -> Any:
    return launch_server(request.param)


@pytest.fixture(scope="module")
def tokens(fuzzed_server: Any) -> dict[str, str]:
    return {role: token_for(fuzzed_server, role) for role in fuzz.ROLES}


def test_no_caller_finds_a_server_error_or_an_undocumented_answer(
    fuzzed_server: Any, tokens: dict[str, str]
) -> None:
    failed = {}
    for caller in fuzz.callers(fuzzed_server.certs_dir, tokens):
        result = fuzz.run(
            fuzzed_server.base_url,
            fuzzed_server.certs_dir / "ca.pem",
            caller,
            max_time=SECONDS_PER_CALLER,
            seed=SEED,
            baseline=BASELINE,
        )
        if result.returncode != 0:
            failed[caller.name] = (result.stdout[-6000:], result.stderr[-2000:])
    assert not failed, "\n\n".join(
        f"== {name}\n{out}\n{err}" for name, (out, err) in failed.items()
    )
