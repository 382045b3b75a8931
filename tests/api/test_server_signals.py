"""Stopping the server: Ctrl-C (SIGINT) or SIGTERM to its process group, as a terminal and
a service manager send them, ends every process of it promptly and quietly (no "leaked
semaphore objects" warning, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import running_server

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
    assert "Application shutdown complete" in log
