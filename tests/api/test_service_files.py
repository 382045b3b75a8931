"""The service files of ``docs/`` as written: the nginx front (``docs/nginx-front.conf``) run
by a real nginx in front of a real registry, and the systemd unit
(``docs/clientregistry.service``) checked by ``systemd-analyze verify``.

Only ports and paths are changed for the test (free ports on 127.0.0.1, the pid file and
error log in a temporary directory); the rest of each file is used as shipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from registry_servers import JSON_HEADERS, RegistryServer

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    pytest.fail(f"nginx did not listen on {port}:\n{log.read_text()}")


@contextlib.contextmanager
def _nginx(config: str, prefix: Path, port: int) -> Iterator[None]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: make test installs it (.ci/debian-packages)")
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config, encoding="utf-8")
    log = prefix / "logs" / "error.log"
    directives = f"daemon off; pid {prefix / 'nginx.pid'}; error_log {log} info;"
    check = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-g", directives],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process, log)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(launch_server: Callable[..., RegistryServer]) -> tuple[RegistryServer, int]:
    metrics_port = _free_port()
    return launch_server("sqlite", env={"CR_METRICS_PORT": str(metrics_port)}), metrics_port


def test_the_nginx_front_passes_mutual_tls_through(server, tmp_path: Path, fhir) -> None:
    registry, metrics_port = server
    front, scrape = _free_port(), _free_port()
    text = (DOCS / "nginx-front.conf").read_text(encoding="utf-8")
    for shipped, here in (
        ("listen 443;", f"listen 127.0.0.1:{front};"),
        ("server 127.0.0.1:3000;", f"server 127.0.0.1:{registry.port};"),
        ("listen 9100;", f"listen 127.0.0.1:{scrape};"),
        ("http://127.0.0.1:9464", f"http://127.0.0.1:{metrics_port}"),
    ):
        assert shipped in text
        text = text.replace(shipped, here)
    with _nginx(text, tmp_path / "nginx", front):
        base = f"https://localhost:{front}"
        cert, key = registry.cert_files("openmrs")
        with httpx.Client(base_url=base, verify=registry.ssl_context(cert, key)) as client:
            created = client.post(
                "/fhir/Patient", content=json.dumps(fhir.patient("openmrs")), headers=JSON_HEADERS
            )
            assert created.status_code == 201, created.text  # the registry saw the certificate
        with httpx.Client(base_url=base, verify=registry.ssl_context()) as anonymous:
            refused = anonymous.get("/fhir/Patient/x")
            assert refused.status_code == 401  # the registry's answer, not nginx's
            assert anonymous.get("/readyz").json() == {"status": "ready"}

        scraped = httpx.get(f"http://127.0.0.1:{scrape}/metrics", timeout=30)
        assert scraped.status_code == 200
        assert "clientregistry_http_requests_total" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{scrape}/", timeout=30).status_code == 404


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: make test installs systemd (.ci/debian-packages)")
    text = (DOCS / "clientregistry.service").read_text(encoding="utf-8")
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "ExecStart=/opt/clientregistry/bin/clientregistry serve" in text
    # the programs it names exist where it is installed; here, stand-ins
    unit = tmp_path / "clientregistry.service"
    unit.write_text(text.replace("/opt/clientregistry/bin/clientregistry", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "clientregistry.service" not in result.stderr, result.stderr
