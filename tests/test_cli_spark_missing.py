"""``dedupe --engine spark`` without the spark extra: one clear message, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clientregistry.cli import app


def test_without_pyspark_the_message_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    source = tmp_path / "one.ndjson"
    source.write_text('{"resourceType": "Patient", "id": "a"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["dedupe", str(source), "-o", str(tmp_path / "c.csv"), "--engine", "spark"]
    )
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "clientregistry[spark]" in " ".join(result.stderr.split())
    assert not (tmp_path / "c.csv").exists()
