"""``/admin/imports`` over HTTPS on a real ``clientregistry serve``: upload, the server's job
runner, progress, the report by ``Accept``, cancel, and a restart in the middle."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from registry_servers import (
    CLI,
    RegistryServer,
    _free_port,
    _server_environment,
    _stop,
    _wait_until_ready,
)
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from import_data import people, write_ndjson

from clientregistry.registry.setup import init_data_dir
from clientregistry.store.models import ImportRow, SourceRecord

FreshDatabase = Callable[[str], AbstractContextManager[str]]
PASSWORD = "import admin password 1"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NDJSON = {"Content-Type": "application/fhir+ndjson"}


def add_admin(data_dir: Path, username: str) -> None:
    made = subprocess.run(
        [str(CLI), "users", "add", username, "--role", "admin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        env=_server_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)


def admin_client(server: RegistryServer, username: str) -> httpx.Client:
    client = server.new_client()
    response = client.post("/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return client


@pytest.fixture(scope="module")
def admin(registry_server: RegistryServer) -> httpx.Client:
    add_admin(registry_server.data_dir, "imp-admin")
    return admin_client(registry_server, "imp-admin")


def wait_done(client: httpx.Client, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/admin/imports/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] not in ("queued", "running"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def ndjson(patients: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(p) + b"\n" for p in patients)


def tagged(patients: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The people with ids of this test's own (the shared server keeps every test's)."""
    return [{**p, "id": f"{prefix}-{p['id']}"} for p in patients]


def test_an_upload_is_imported_by_the_server_and_reported(
    registry_server: RegistryServer, admin: httpx.Client
) -> None:
    patients = tagged(people(120, seed=21), "up")
    body = ndjson(patients) + b"{broken\n"
    response = admin.post("/admin/imports?system=dhis2", content=body, headers=NDJSON)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/admin/imports/{job['id']}"
    assert job["state"] in ("queued", "running") and job["system"] == "dhis2"
    done = wait_done(admin, job["id"])
    assert done["state"] == "done", done
    assert done["counts"]["created"] == 120 and done["counts"]["errors"] == 1
    assert done["progress"] == 1.0 and done["total"] == 121
    # the records are in the registry, as dhis2's
    report = admin.get(f"/admin/imports/{job['id']}/report")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rows) == 121 and rows[-1]["outcome"] == "error" and rows[-1]["line"] == "121"
    first = rows[0]
    assert first["source_id"] == "dhis2" and first["patient_id"] == "up-p-1"
    reader = registry_server.client("hie")
    record = reader.get(f"/fhir/Patient/{first['record_id']}")
    assert record.status_code == 200, record.text
    assert record.json()["link"][0]["other"]["reference"] == f"Patient/{first['CRUID']}"
    page = admin.get(f"/admin/imports/{job['id']}/rows", params={"offset": 119, "limit": 5})
    assert page.status_code == 200, page.text
    lines = page.json()
    assert lines["total"] == 121 and lines["by_outcome"]["error"] == 1
    assert [line["row"] for line in lines["items"]] == [120, 121]
    assert lines["items"][1]["outcome"] == "error" and lines["items"][1]["error"]
    assert lines["items"][0]["CRUID"] == rows[119]["CRUID"]
    assert admin.get("/admin/imports/999999/rows").status_code == 404
    workbook = admin.get(f"/admin/imports/{job['id']}/report", headers={"Accept": XLSX})
    assert workbook.status_code == 200
    assert workbook.headers["content-type"] == XLSX
    with zipfile.ZipFile(io.BytesIO(workbook.content)) as xlsx:
        assert any(name.startswith("xl/charts/") for name in xlsx.namelist())
    # the same file again: found done, nothing imported twice
    again = admin.post("/admin/imports?system=dhis2", content=body, headers=NDJSON)
    assert again.status_code == 200 and again.json()["already_done"], again.text
    listed = admin.get("/admin/imports").json()
    assert any(item["id"] == job["id"] for item in listed["items"])


def test_uploads_that_cannot_work_are_refused(admin: httpx.Client) -> None:
    body = ndjson(tagged(people(2), "bad"))
    cases = [
        ({"Content-Type": "application/pdf"}, "", 415),
        (NDJSON, "?system=nobody", 400),
        (NDJSON, "?system=openmrs&column=shoe%3Dsize", 400),
        (NDJSON, "?system=openmrs&on_error=ignore", 400),
    ]
    for headers, query, status in cases:
        response = admin.post(f"/admin/imports{query}", content=body, headers=headers)
        assert response.status_code == status, (query, response.text)
        assert "detail" in response.json()
    empty = admin.post("/admin/imports?system=openmrs", content=b"", headers=NDJSON)
    assert empty.status_code == 400
    assert admin.get("/admin/imports/1/report", headers={"Accept": "image/png"}).status_code == 406


def test_a_running_import_is_cancelled_after_its_batch_and_keeps_what_it_stored(
    registry_server: RegistryServer, admin: httpx.Client
) -> None:
    patients = tagged(people(3000, seed=23), "cx")
    with _engine(registry_server.data_dir) as engine, engine.connect() as connection:
        before = connection.scalar(
            select(func.count())
            .select_from(SourceRecord)
            .where(SourceRecord.client_system == "dhis2")
        )
    response = admin.post("/admin/imports?system=dhis2", content=ndjson(patients), headers=NDJSON)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while admin.get(f"/admin/imports/{job_id}").json()["counts"]["rows"] == 0:
        assert time.monotonic() < deadline, registry_server.log()
        time.sleep(0.05)
    cancelled = admin.post(f"/admin/imports/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancel_requested"]
    ended = wait_done(admin, job_id)
    assert ended["state"] == "cancelled", ended
    rows = ended["counts"]["rows"]
    assert 0 < rows < 3000, ended
    # nothing moves after the end; every row handled is stored and reported, in order
    assert admin.get(f"/admin/imports/{job_id}").json()["counts"]["rows"] == rows
    report = admin.get(f"/admin/imports/{job_id}/report")
    reported = list(csv.DictReader(io.StringIO(report.text)))
    assert [int(row["row"]) for row in reported] == list(range(1, rows + 1))
    with _engine(registry_server.data_dir) as engine, engine.connect() as connection:
        stored = connection.scalar(
            select(func.count())
            .select_from(SourceRecord)
            .where(SourceRecord.client_system == "dhis2")
        )
    assert stored == before + rows  # what it stored stays; nothing after the cancel
    # a finished import cannot be cancelled again; one that does not exist is not found
    assert admin.post(f"/admin/imports/{job_id}/cancel").status_code == 409
    assert admin.post("/admin/imports/999999/cancel").status_code == 404


# ----------------------------------------------------------------------------- restarts


def serve(data_dir: Path, log: Path) -> RegistryServer:
    port = _free_port()
    with log.open("ab") as fh:
        process = subprocess.Popen(
            [str(CLI), "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=_server_environment(),
            start_new_session=True,
        )
    server = RegistryServer("", data_dir, port, "", log, process)
    _wait_until_ready(server)
    return server


@pytest.fixture(params=["sqlite", "postgresql"])
def data_dir(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database: FreshDatabase
) -> Iterator[Path]:
    with fresh_database(request.param) as url:
        directory = tmp_path / "data"
        init_data_dir(directory, hostnames=[], database_url=url)
        add_admin(directory, "ada")
        yield directory


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_server_restart_resumes_an_unfinished_import(
    data_dir: Path, tmp_path: Path, how: str
) -> None:
    path = write_ndjson(tmp_path / "big.ndjson", people(3000, seed=5))
    server = serve(data_dir, tmp_path / "server.log")
    try:
        client = admin_client(server, "ada")
        response = client.post(
            "/admin/imports?system=openmrs", content=path.read_bytes(), headers=NDJSON
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/admin/imports/{job_id}").json()["counts"]["rows"] < 500:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        client.close()
    finally:
        if how == "kill":
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
        server.close_clients()
        _stop(server.process)
    server = serve(data_dir, tmp_path / "server.log")
    try:
        client = admin_client(server, "ada")
        status = client.get(f"/admin/imports/{job_id}").json()
        assert 0 < status["counts"]["rows"] < 3000 or status["state"] == "done"
        done = wait_done(client, job_id, timeout=240)
        assert done["state"] == "done", (done, server.log())
        assert done["counts"]["created"] == 3000
        client.close()
        with _engine(data_dir) as engine, engine.connect() as connection:
            records = connection.scalar(select(func.count()).select_from(SourceRecord))
            rows = connection.scalars(
                select(ImportRow.row).where(ImportRow.job_id == job_id).order_by(ImportRow.row)
            ).all()
        assert records == 3000
        assert rows == list(range(1, 3001))
    finally:
        server.close_clients()
        _stop(server.process)


class _engine:
    """An engine on a data directory's database, disposed at the end of the block."""

    def __init__(self, data_dir: Path) -> None:
        from clientregistry.settings import load_settings
        from clientregistry.store.db import create_engine_for

        self.engine = create_engine_for(load_settings(data_dir, environ={}).database)

    def __enter__(self) -> Any:
        return self.engine

    def __exit__(self, *_: object) -> None:
        self.engine.dispose()
