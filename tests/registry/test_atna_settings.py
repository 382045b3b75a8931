"""The ``[atna]`` section: off without a host; environment overrides; defaults (the server's
certificate, FHIR JSON, port 6514); every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from clientregistry.errors import ConfigError, Problem
from clientregistry.registry.atna_settings import parse_atna
from clientregistry.registry.setup import init_data_dir
from clientregistry.settings import load_settings


def test_off_without_a_host(tmp_path: Path) -> None:
    problems: list[Problem] = []
    assert parse_atna(None, {}, tmp_path, problems) is None
    assert parse_atna({"port": 1}, {}, tmp_path, problems) is None
    assert problems == []


def test_defaults_and_environment(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "data", hostnames=[])
    assert load_settings(tmp_path / "data", environ={}).atna is None  # as `init` writes it
    env = {
        "CR_ATNA_HOST": "arr.example.org",
        "CR_ATNA_CA_FILE": "certs/arr-ca.pem",
        "CR_ATNA_FORMAT": "DICOM",
    }
    atna = load_settings(tmp_path / "data", environ=env).atna
    assert atna is not None
    assert (atna.host, atna.port, atna.format) == ("arr.example.org", 6514, "dicom")
    assert atna.ca_file == tmp_path / "data" / "certs" / "arr-ca.pem"
    assert atna.cert_file == tmp_path / "data" / "certs" / "server.pem"
    assert atna.key_file == tmp_path / "data" / "certs" / "server-key.pem"
    assert atna.app_name == "clientregistry" and atna.repository == "arr.example.org:6514"


def test_every_problem_is_named(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "data", hostnames=[])
    env = {"CR_ATNA_HOST": "arr", "CR_ATNA_PORT": "70000", "CR_ATNA_FORMAT": "xml"}
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path / "data", environ=env)
    fields = {problem.location for problem in raised.value.problems}
    assert {"atna.port", "atna.format", "atna.ca_file"} <= fields
