"""Signals to the server: Ctrl-C (SIGINT) or SIGTERM to its process group, as a terminal and
a service manager send them, end every process of it promptly and quietly (no "leaked
semaphore objects" warning, no traceback); SIGHUP makes every worker take a renewed server
certificate, without a restart."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from registry_servers import running_server

STOP_TIMEOUT = 30.0


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["ctrl-c-one-worker", "sigterm-two-workers"],
)
def test_a_signal_stops_the_server_quietly(
    tmp_path, fresh_database, signum: signal.Signals, workers: int
) -> None:
    with running_server(tmp_path, "sqlite", fresh_database, workers=workers) as server:
        os.killpg(server.process.pid, signum)
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT} s after {signum.name}:\n{server.log()}")
        log = server.log()
    assert "leaked semaphore" not in log, log
    assert "Traceback" not in log, log
    assert "Application shutdown complete" in log, log


def _served_serial(server) -> int:
    """The serial number of the certificate the server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(server.certs_dir / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_a_renewed_server_certificate(tmp_path, fresh_database, workers) -> None:
    with running_server(tmp_path, "sqlite", fresh_database, workers=workers) as server:
        before = _served_serial(server)
        renewed = server.cli("certs", "server", "--days", "30")
        assert renewed.returncode == 0, renewed.stderr
        on_disk = x509.load_pem_x509_certificate((server.certs_dir / "server.pem").read_bytes())
        assert on_disk.serial_number != before
        assert _served_serial(server) == before  # the files alone change nothing
        started = server.log().count("Started server process")

        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while (now := _served_serial(server)) == before:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert now == on_disk.serial_number
        for _ in range(4):  # every worker took it (each new connection may land on either)
            assert _served_serial(server) == on_disk.serial_number
        assert server.process.poll() is None
        assert server.log().count("Started server process") == started  # no restart
        response = server.new_client("openmrs").get("/fhir/metadata")
        assert response.status_code == 200
