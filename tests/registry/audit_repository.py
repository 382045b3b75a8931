"""A real ATNA audit repository for the tests: Debian's ``rsyslogd`` with ``rsyslog-gnutls``,
started (and stopped, and started again) by the test with a configuration and certificates
of its own: ``imtcp`` over TLS (``StreamDriver gtls``, RFC 5425, mutual TLS with the client's
CA), each received message written to a file as ``<structured data> <message>``.

It runs as whoever runs the tests (it needs no privilege: an unprivileged port, files in the
test's directory, no system socket).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from clientregistry.security.certificates import (
    create_ca,
    issue_server_cert,
    write_key,
    write_pem,
)

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS_MODULE = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")

CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{client_ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="received" type="string" string="%structured-data% %msg%\\n")
*.* action(type="omfile" file="{received}" template="received")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    pause = 0.02
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


class AuditRepository:
    """One rsyslogd receiver in ``directory`` on ``port``; :meth:`start`, :meth:`stop`."""

    def __init__(self, directory: Path, client_ca: x509.Certificate | None = None) -> None:
        if not Path(RSYSLOGD).exists() or not GTLS_MODULE.exists():
            pytest.skip("needs rsyslog and rsyslog-gnutls (.ci/debian-packages)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        self.port = free_port()
        self.ca_key, self.ca = create_ca("audit repository CA")
        key, cert = issue_server_cert(self.ca_key, self.ca, ["localhost"], ["127.0.0.1"])
        write_pem(directory / "ca.pem", self.ca)
        write_pem(directory / "repository.pem", cert)
        write_key(directory / "repository-key.pem", key)
        if client_ca is not None:
            self.trust(client_ca)
        self.received = directory / "received.log"
        self.config = directory / "rsyslog.conf"
        self.config.write_text(
            CONFIG.format(
                work=directory / "work",
                client_ca=directory / "client-ca.pem",
                cert=directory / "repository.pem",
                key=directory / "repository-key.pem",
                port=self.port,
                received=self.received,
            ),
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def trust(self, client_ca: x509.Certificate) -> None:
        """Accept clients whose certificate ``client_ca`` issued (before :meth:`start`)."""
        write_pem(self.directory / "client-ca.pem", client_ca)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def start(self) -> None:
        assert self.process is None
        log = (self.directory / "rsyslogd.out").open("ab")
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RSYSLOG_DYNNAME": f"cr-test-{self.port}"},
        )
        log.close()
        wait_for(self._listening, what="rsyslogd to listen")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            output = (self.directory / "rsyslogd.out").read_text(errors="replace")
            raise AssertionError(f"rsyslogd ended ({self.process.returncode}): {output}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM), and wait until it has ended."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def lines(self) -> list[str]:
        if not self.received.exists():
            return []
        text = self.received.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]
