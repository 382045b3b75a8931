"""The registry servers of the API tests: :func:`running_server` runs ``clientregistry
serve`` over real HTTPS with mutual TLS on a data directory made by ``init``, and
:class:`RegistryServer` talks to it (the fixtures of ``conftest.py`` use them; a test module
that starts a server of its own imports them from here, under a name no other module has).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from clientregistry.registry.setup import add_system_to_config, init_data_dir
from clientregistry.security.authority import CertificateAuthority
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import create_engine_for

FreshDatabase = Callable[[str], AbstractContextManager[str]]
"""The ``fresh_database`` fixture of ``tests/conftest.py``."""
STARTUP_TIMEOUT = 60.0  # (a machine busy with other work starts servers slowly)
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
SUBMITTER = ClientSystemConfig(
    "kiosk", "Registration kiosk", "http://clientregistry.org/kiosk", ("submit",)
)
"""A system added to every server: submits, may read nothing but its own records."""
STEWARD = ClientSystemConfig(
    "steward", "Data steward", "http://clientregistry.org/steward", ("merge", "read-identifiers")
)
"""A system added to every server: may merge Patients (Patient/$merge) and read identifiers."""
EXTRA_SYSTEMS = (READER, SUBMITTER, STEWARD)


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
    env: Mapping[str, str] | None = None,
    systems: tuple[ClientSystemConfig, ...] = (),
) -> Iterator[RegistryServer]:
    """``init`` a data directory under ``base`` on a fresh database of ``backend`` and serve
    it until the block ends (``env``: ``CR_…`` settings for the server; ``systems``:
    registered besides :data:`EXTRA_SYSTEMS`)."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database(backend))
        data_dir = base / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        for extra in (*EXTRA_SYSTEMS, *systems):
            CertificateAuthority.load(data_dir / "certs").issue_client(extra.name)
            add_system_to_config(data_dir, extra)
        log_path = base / "server.log"
        log_file = stack.enter_context(log_path.open("wb"))
        port = _free_port()
        command = [str(CLI), "serve", "--data-dir", str(data_dir), "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**_server_environment(), **(env or {})},
            start_new_session=True,
        )
        stack.callback(_stop, process)
        server = RegistryServer(backend, data_dir, port, url, log_path, process)
        stack.callback(server.close_clients)
        _wait_until_ready(server)
        yield server
