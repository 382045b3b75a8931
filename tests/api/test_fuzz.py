"""Fuzzing as a habit: schemathesis against the running server's OpenAPI description, a few
seconds per caller (``bench/fuzz.py`` runs the same for longer). No answer may be a 5xx, and
every status, content type and header must be one the description documents.

``fuzz-baseline.json`` lists failures accepted for now, each with the reason and an expiry
date (after which it fails again): 500s that issue 15's other half fixes in files it owns.
"""

from __future__ import annotations

import importlib.util
import sys
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


@pytest.fixture(scope="module")
def tokens(registry_server: Any) -> dict[str, str]:
    return {role: token_for(registry_server, role) for role in fuzz.ROLES}


def test_no_caller_finds_a_server_error_or_an_undocumented_answer(
    registry_server: Any, tokens: dict[str, str]
) -> None:
    failed = {}
    for caller in fuzz.callers(registry_server.certs_dir, tokens):
        result = fuzz.run(
            registry_server.base_url,
            registry_server.certs_dir / "ca.pem",
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
