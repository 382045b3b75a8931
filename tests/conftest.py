"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""``/work/main/../shared/reference``: OpenCR's sources, demo data and benchmark files."""


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference material (OpenCR checkout etc.); skips the test when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference material not found at {REFERENCE_DIR}")
    return REFERENCE_DIR
