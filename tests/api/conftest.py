"""Fixtures of the API tests: the real ``clientregistry serve`` over real HTTPS with mutual TLS.

``registry_server`` (one per backend for the session) runs on SQLite and, when
``CR_TEST_POSTGRES_URL`` is set (``postgresql://postgres@127.0.0.1:5432/test``), on a fresh
PostgreSQL database created for that server and dropped afterwards. Each server gets a data
directory made by ``init`` (CA, server and client certificates for openmrs, dhis2, lims) plus
one more system, ``hie``, that may read demographics but not submit. The server runs as a
subprocess on a free port; its log is attached to the report of every failing test that used
it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from clientregistry.registry.setup import add_system_to_config, init_data_dir
from clientregistry.security.authority import CertificateAuthority
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import create_engine_for

FreshDatabase = Callable[[str], AbstractContextManager[str]]
"""The ``fresh_database`` fixture of ``tests/conftest.py``."""
STARTUP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 30.0
FHIR_JSON = "application/fhir+json"
JSON_HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
GOLDEN_CODE = "5c827da5-4858-4f3d-a50c-62ece001efea"
CLIENT_TAG_SYSTEM = "http://openclientregistry.org/fhir/clientid"
READER = ClientSystemConfig(
    "hie",
    "Health Information Exchange",
    "http://clientregistry.org/hie",
    ("read-identifiers", "read-demographics"),
)
"""A system added to every server: reads demographics, may not submit."""


def _executable() -> Path:
    beside = Path(sys.executable).with_name("clientregistry")
    if beside.exists():
        return beside
    return Path(__file__).resolve().parents[2] / ".venv" / "bin" / "clientregistry"


CLI = _executable()


def id_system(system: str) -> str:
    """The internal identifier system of a demo client system."""
    return f"http://clientregistry.org/{system}"


@dataclass
class RegistryServer:
    """A running ``clientregistry serve`` and ways to talk to it."""

    backend: str
    data_dir: Path
    port: int
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    _clients: dict[str, httpx.Client] = field(default_factory=dict)
    _extra: list[httpx.Client] = field(default_factory=list)

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def cert_files(self, system: str) -> tuple[Path, Path]:
        clients = self.certs_dir / "clients"
        return clients / f"{system}.pem", clients / f"{system}-key.pem"

    def ssl_context(
        self, cert: Path | None = None, key: Path | None = None, *, tls12: bool = False
    ) -> ssl.SSLContext:
        """Trusts the registry's CA; presents ``cert``/``key`` when given. ``tls12`` caps the
        protocol at TLS 1.2, where a refused client certificate fails the handshake itself
        (in TLS 1.3 the server's verdict arrives after the client has finished)."""
        context = ssl.create_default_context(cafile=str(self.certs_dir / "ca.pem"))
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(cert, key)
        return context

    def new_client(
        self,
        system: str | None = None,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        tls12: bool = False,
    ) -> httpx.Client:
        """A client with its own connections (closed at teardown at the latest): as ``system``
        (its certificate from the data directory), with ``cert``/``key``, or with none."""
        if system is not None:
            cert, key = self.cert_files(system)
        client = httpx.Client(
            base_url=self.base_url,
            verify=self.ssl_context(cert, key, tls12=tls12),
            timeout=REQUEST_TIMEOUT,
        )
        self._extra.append(client)
        return client

    def client(self, system: str) -> httpx.Client:
        """The (kept-alive, shared) client of ``system``."""
        if system not in self._clients:
            cert, key = self.cert_files(system)
            self._clients[system] = httpx.Client(
                base_url=self.base_url, verify=self.ssl_context(cert, key), timeout=REQUEST_TIMEOUT
            )
        return self._clients[system]

    def submit(self, system: str, patient: Mapping[str, Any]) -> httpx.Response:
        """``POST /fhir/Patient`` as ``system``."""
        return self.client(system).post(
            "/fhir/Patient", content=json.dumps(patient), headers=JSON_HEADERS
        )

    def read(self, system: str, reference: str) -> httpx.Response:
        """``GET /fhir/<reference>`` (``Patient/<id>`` or a bare id) as ``system``."""
        if not reference.startswith("Patient/"):
            reference = f"Patient/{reference}"
        return self.client(system).get(f"/fhir/{reference}", headers={"Accept": FHIR_JSON})

    def engine(self) -> Engine:
        """An engine on the server's database (dispose it when done)."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'registry.db'}"
        return create_engine_for(url)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``clientregistry <args> --data-dir D`` in the server's environment."""
        return subprocess.run(
            [str(CLI), *args, "--data-dir", str(self.data_dir)],
            env=_server_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def close_clients(self) -> None:
        for client in [*self._clients.values(), *self._extra]:
            client.close()
        self._clients.clear()
        self._extra.clear()


def _server_environment() -> dict[str, str]:
    """This process's environment without CR_* settings, the server bound to loopback only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    env["CR_SERVER_HOST"] = "127.0.0.1"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_ready(server: RegistryServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    cert, key = server.cert_files("openmrs")
    context = server.ssl_context(cert, key)
    last: object = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"clientregistry serve exited with {server.process.returncode}:\n{server.log()}"
            )
        try:
            with httpx.Client(base_url=server.base_url, verify=context, timeout=2.0) as client:
                response = client.get("/fhir/metadata")
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.TransportError as error:
            last = error
        time.sleep(0.1)
    raise RuntimeError(
        f"clientregistry serve did not answer within {STARTUP_TIMEOUT} s (last: {last!r}):\n"
        f"{server.log()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (the server and, with --workers, its workers)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def running_server(
    base: Path,
    backend: str,
    fresh_database: FreshDatabase,
    *,
    workers: int = 1,
    configure: Callable[[Path], None] | None = None,
) -> Iterator[RegistryServer]:
    """``init`` a data directory under ``base`` on a fresh database of ``backend`` and serve
    it until the block ends (``configure(data_dir)``, when given, runs before the server
    starts, e.g. to edit config.toml)."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database(backend))
        data_dir = base / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        CertificateAuthority.load(data_dir / "certs").issue_client(READER.name)
        add_system_to_config(data_dir, READER)
        if configure is not None:
            configure(data_dir)
        log_path = base / "server.log"
        log_file = stack.enter_context(log_path.open("wb"))
        port = _free_port()
        command = [str(CLI), "serve", "--data-dir", str(data_dir), "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_server_environment(),
            start_new_session=True,
        )
        stack.callback(_stop, process)
        server = RegistryServer(backend, data_dir, port, url, log_path, process)
        stack.callback(server.close_clients)
        _wait_until_ready(server)
        yield server


BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")]


@pytest.fixture(scope="session", params=BACKENDS)
def registry_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_database: FreshDatabase,
) -> Iterator[RegistryServer]:
    """A registry served over HTTPS, one per backend, shared by the test modules (they use
    identifiers and made-up people of their own, so they do not see each other's records).
    Tests that change the server itself (revoking certificates) start their own."""
    base = tmp_path_factory.mktemp(f"registry-{request.param}")
    with running_server(base, request.param, fresh_database) as server:
        yield server


@pytest.fixture(scope="module")
def launch_server(
    tmp_path_factory: pytest.TempPathFactory, fresh_database: FreshDatabase
) -> Iterator[Callable[..., RegistryServer]]:
    """Start servers of a module's own (``launch("postgresql", workers=3, configure=...)``);
    they stop when the module ends. A PostgreSQL launch skips the test without
    CR_TEST_POSTGRES_URL."""
    with contextlib.ExitStack() as stack:

        def launch(
            backend: str, *, workers: int = 1, configure: Callable[[Path], None] | None = None
        ) -> RegistryServer:
            base = tmp_path_factory.mktemp(f"registry-{backend}-w{workers}")
            return stack.enter_context(
                running_server(base, backend, fresh_database, workers=workers, configure=configure)
            )

        yield launch


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of the registry server(s) a failing test used to its report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, RegistryServer):
                tail = "\n".join(value.log().splitlines()[-200:])
                report.sections.append((f"registry server log ({value.backend})", tail))
    return report


# ----------------------------------------------------------------------------- FHIR helpers


class Fhir:
    """Small helpers shared by the API tests (exposed as the ``fhir`` fixture)."""

    golden_code = GOLDEN_CODE
    client_tag_system = CLIENT_TAG_SYSTEM

    def __init__(self) -> None:
        self._random = random.Random()

    def token(self, prefix: str = "") -> str:
        return prefix + uuid.uuid4().hex[:12]

    def _word(self) -> str:
        consonants, vowels = "bdfgklmnprstvz", "aeiou"
        letters = [self._random.choice(consonants if i % 2 == 0 else vowels) for i in range(8)]
        return "".join(letters).capitalize()

    def person(self) -> dict[str, Any]:
        """Demographics of a made-up person unlike any other (random names and birth date)."""
        birth = (
            f"{self._random.randint(1930, 2015)}-{self._random.randint(1, 12):02d}"
            f"-{self._random.randint(1, 28):02d}"
        )
        phone = "".join(self._random.choice(string.digits) for _ in range(9))
        return {
            "name": [{"use": "official", "family": self._word(), "given": [self._word()]}],
            "gender": self._random.choice(["male", "female"]),
            "birthDate": birth,
            "telecom": [{"system": "phone", "value": phone}],
        }

    def patient(
        self,
        system: str,
        value: str | None = None,
        demographics: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A Patient with ``system``'s internal identifier (``value``, random when None)."""
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": id_system(system), "value": value or self.token()}],
        }
        patient.update(demographics if demographics is not None else self.person())
        patient.update(fields)
        return patient

    @staticmethod
    def outcome(
        response: httpx.Response,
        status: int,
        code: str | None = None,
        expression: str | None = None,
    ) -> dict[str, Any]:
        """Assert ``response`` is an OperationOutcome with ``status`` (and the issue code and
        FHIRPath expression, when given); return it."""
        assert response.status_code == status, (response.status_code, response.text)
        assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
        body: dict[str, Any] = response.json()
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"], body
        assert all(issue["severity"] in ("fatal", "error") for issue in body["issue"]), body
        if code is not None:
            assert body["issue"][0]["code"] == code, body
        if expression is not None:
            expressions = [e for issue in body["issue"] for e in issue.get("expression", [])]
            assert expression in expressions, body
        return body

    @staticmethod
    def ids(response: httpx.Response) -> tuple[str, str]:
        """(source record id, golden record id) from ``Location`` and ``LocationCRUID``."""
        location = response.headers["Location"]
        cruid = response.headers["LocationCRUID"]
        assert location.startswith("Patient/"), location
        assert cruid.startswith("Patient/"), cruid
        return location.removeprefix("Patient/"), cruid.removeprefix("Patient/")

    @staticmethod
    def tags(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(resource.get("meta", {}).get("tag", []))

    @staticmethod
    def links(resource: Mapping[str, Any], kind: str | None = None) -> list[str]:
        """References of ``resource.link`` (of type ``kind`` when given)."""
        return [
            link["other"]["reference"]
            for link in resource.get("link", [])
            if kind is None or link["type"] == kind
        ]


@pytest.fixture(scope="session")
def fhir() -> Fhir:
    return Fhir()
