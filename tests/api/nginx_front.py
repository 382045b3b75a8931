"""A real nginx (Debian's) in front of a test registry, running ``docs/nginx-mtls-proxy.conf``.

The documented file is used as it is, with only its deployment-specific names replaced
(:data:`REPLACEMENTS`: the registry's port, the certificate paths, the listening address),
inside an ``http {}`` block with this nginx's own pid, log and temporary paths in a
temporary directory. nginx runs in the foreground as a subprocess of the test, on a free port,
and is stopped (SIGQUIT, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOCUMENTED_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "nginx-mtls-proxy.conf"
PROXY_ADDRESS = "127.0.0.2"
"""The address the documented nginx connects to the registry from (``proxy_bind``)."""
STARTUP_TIMEOUT = 15.0


@dataclass
class NginxFront:
    port: int
    directory: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(registry_port: int, certs_dir: Path, port: int) -> str:
    """The documented configuration with this test's port, certificates and addresses."""
    text = DOCUMENTED_CONFIG.read_text(encoding="utf-8")
    replacements = {
        "server 127.0.0.1:3000;": f"server 127.0.0.1:{registry_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/clientregistry/certs/": f"{certs_dir}/",
        "server_name registry.example.org;": "server_name localhost;",
    }
    for old, new in replacements.items():
        assert old in text, f"{DOCUMENTED_CONFIG} no longer has {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx_front(directory: Path, registry_port: int, certs_dir: Path) -> Iterator[NginxFront]:
    """nginx running the documented configuration in front of the registry at
    ``registry_port``, until the block ends."""
    binary = nginx_binary()
    assert binary, "nginx is not installed (it is in .ci/debian-packages)"
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = (
        f"{user}worker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n"
        f"{render(registry_port, certs_dir, port)}\n}}\n"
    )
    (directory / "nginx.conf").write_text(config, encoding="utf-8")
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    front = NginxFront(port, directory)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}:\n{front.error_log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not listen within {STARTUP_TIMEOUT} s")
            time.sleep(0.05)
        yield front
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
