"""Setting up on PostgreSQL with environment variables alone, as the README says: ``init``
and ``serve`` with ``CR_DATABASE_URL`` use the same database, the printed admin password
logs in, and ``init``/``serve`` refuse, changing nothing, a database they cannot use."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from registry_servers import (
    CLI,
    RegistryServer,
    _free_port,
    _server_environment,
    _stop,
    _wait_until_ready,
)
from sqlalchemy import select

from clientregistry.store.db import create_engine_for
from clientregistry.store.models import ClientSystem, User

PASSWORD = re.compile(r"admin password \(shown once, store it now\): (\S+)")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def postgres_url(fresh_database) -> Iterator[str]:
    with fresh_database("postgresql") as url:
        yield url


@contextlib.contextmanager
def _serving(data_dir: Path, env: dict[str, str], log: Path) -> Iterator[RegistryServer]:
    port = int(env["CR_SERVER_PORT"])
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CLI), "serve", "--data-dir", str(data_dir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            server = RegistryServer(
                "postgresql", data_dir, port, env["CR_DATABASE_URL"], log, process
            )
            _wait_until_ready(server)
            yield server
            server.close_clients()
        finally:
            _stop(process)


def test_init_and_serve_with_environment_variables_alone(postgres_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**_server_environment(), "CR_DATABASE_URL": postgres_url}
    env["CR_SERVER_PORT"] = str(_free_port())
    env.pop("CR_SERVER_HOST")  # the default: this machine

    result = _run("init", "--data-dir", str(data_dir), env=env)
    assert result.returncode == 0, result.stderr
    found = PASSWORD.search(result.stdout)
    assert found is not None, result.stdout
    password = found.group(1)
    assert "postgresql://" in result.stdout  # says which database it filled
    assert not (data_dir / "registry.db").exists()  # nothing went to SQLite

    engine = create_engine_for(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.scalars(select(User.username)).all() == ["admin"]
            names = connection.scalars(select(ClientSystem.name).order_by(ClientSystem.name))
            assert names.all() == ["dhis2", "lims", "openmrs"]
    finally:
        engine.dispose()

    with _serving(data_dir, env, tmp_path / "server.log") as server:
        context = server.ssl_context()
        with httpx.Client(base_url=server.base_url, verify=context) as client:
            login = {"username": "admin", "password": password}
            response = client.post("/auth/token", json=login)
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["username"] == "admin"
        metadata = server.client("openmrs").get("/fhir/metadata")
        assert metadata.status_code == 200

    # serve without the variable looks in SQLite, finds no registry and says so
    without = {k: v for k, v in env.items() if k != "CR_DATABASE_URL"}
    refused = _run("serve", "--data-dir", str(data_dir), env=without)
    assert refused.returncode == 2
    assert "holds no registry" in refused.stderr and "CR_DATABASE_URL" in refused.stderr
    assert not (data_dir / "registry.db").exists()

    # a second init on the same database is refused before anything is made
    again = tmp_path / "again"
    second = _run("init", "--data-dir", str(again), env=env)
    assert second.returncode == 2
    assert "already holds a registry" in second.stderr
    assert not again.exists()


def test_init_option_and_variable_are_the_same(postgres_url: str, tmp_path: Path) -> None:
    env = _server_environment()
    result = _run(
        "init", "--data-dir", str(tmp_path / "data"), "--database-url", postgres_url, env=env
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data" / "registry.db").exists()
    assert f'url = "{postgres_url}"' in (tmp_path / "data" / "config.toml").read_text()


def test_init_refuses_a_database_it_cannot_reach(tmp_path: Path) -> None:
    env = {**_server_environment(), "CR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = _run("init", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 2
    assert "nothing was created" in result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_output_to_a_pipe_is_never_wrapped(tmp_path: Path) -> None:
    """Paths and passwords stay on one line however long (the output is not a terminal)."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "data"
    env = {k: v for k, v in _server_environment().items() if k != "COLUMNS"}
    result = _run("init", "--data-dir", str(deep), env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip() == f"configuration   {deep / 'config.toml'}" for line in lines)
    cert = deep / "certs" / "clients" / "openmrs.pem"
    assert any(str(cert) in line for line in lines), result.stdout
    assert PASSWORD.search(result.stdout) is not None
    assert max(len(line) for line in lines) > 100  # long lines were left long
    assert os.path.isdir(deep)
