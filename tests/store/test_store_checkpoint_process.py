"""The server's checkpointer process: it keeps the log short while another process writes,
stops when asked, and stops by itself when its parent is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from wal_database import WalDatabase

from clientregistry.store.checkpoint_process import PARENT_CHECK_SECONDS, CheckpointerProcess
from clientregistry.store.db import create_engine_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_it_restarts_the_log_another_process_writes(wal_database: WalDatabase) -> None:
    process = CheckpointerProcess(
        wal_database.url, interval=0.001, threshold_bytes=0, restart_pages=32
    )
    process.start()
    try:
        wal_database.write(600)  # ~1,200 pages if the log never restarted
    finally:
        process.stop()
    assert not process.is_alive()
    _busy, log_pages, rows = wal_database.log_state()  # nobody else checkpoints now
    assert rows == 600
    assert log_pages < 600  # the log started again from its beginning along the way


def test_it_stops_by_itself_when_its_parent_is_gone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    create_engine_for(url).dispose()
    parent = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from clientregistry.store.checkpoint_process import CheckpointerProcess\n"
            f"p = CheckpointerProcess({url!r})\n"
            "p.start()\n"
            "print(p.pid, flush=True)\n"
            "os._exit(0)  # gone without stopping it, as a killed server would be\n",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 10 * PARENT_CHECK_SECONDS + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
