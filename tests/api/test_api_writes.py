"""run_short_write: on SQLite a short write takes its turn without blocking the event loop,
then runs on the loop's thread; on PostgreSQL it runs on the loop's thread, or in the thread
pool when the settings say so."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clientregistry.api.writes import run_short_write
from clientregistry.store.db import create_engine_for, session_factory, sessions_write_gate
from clientregistry.store.errors import WouldWait


def _context(url: str, *, writes_in_thread_pool: bool = False) -> Any:
    return SimpleNamespace(
        sessions=session_factory(create_engine_for(url)),
        settings=SimpleNamespace(writes_in_thread_pool=writes_in_thread_pool),
    )


def _work(seen: dict[str, Any]) -> Any:
    def work(label: str, *, gate_held: bool, wait_for_locks: bool = True) -> str:
        seen["thread"] = threading.get_ident()
        seen["gate_held"] = gate_held
        seen.setdefault("wait_for_locks", []).append(wait_for_locks)
        if label == "locked" and not wait_for_locks:
            raise WouldWait("held elsewhere")
        gate = seen.get("gate")
        seen["held_during"] = True if gate is None else not gate.try_acquire()
        if label == "fail":
            raise RuntimeError("the write failed")
        return label

    return work


def test_on_sqlite_the_write_runs_on_the_loop_thread_holding_the_gate(tmp_path: Path) -> None:
    context = _context(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gate = sessions_write_gate(context.sessions)
    seen: dict[str, Any] = {"gate": gate}

    async def main() -> tuple[str, int]:
        return await run_short_write(context, _work(seen), "done"), threading.get_ident()

    result, loop_thread = asyncio.run(main())
    assert result == "done"
    assert seen["thread"] == loop_thread
    assert seen["gate_held"] is True
    assert seen["held_during"] is True  # nobody else could take the gate meanwhile
    assert gate is not None and gate.try_acquire()  # released afterwards
    gate.release()


def test_the_gate_is_released_when_the_write_fails(tmp_path: Path) -> None:
    context = _context(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gate = sessions_write_gate(context.sessions)
    assert gate is not None
    with pytest.raises(RuntimeError, match="the write failed"):
        asyncio.run(run_short_write(context, _work({}), "fail"))
    assert gate.try_acquire()
    gate.release()


def test_a_busy_gate_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    context = _context(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gate = sessions_write_gate(context.sessions)
    assert gate is not None
    gate.acquire()  # another writer of this process
    threading.Timer(0.3, gate.release).start()
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main() -> tuple[str, float]:
        started = time.perf_counter()
        tick = asyncio.create_task(ticker())
        result = await run_short_write(context, _work({}), "after the other writer")
        await tick
        return result, time.perf_counter() - started

    result, waited = asyncio.run(main())
    assert result == "after the other writer"
    assert waited >= 0.25  # it had to wait for the other writer ...
    assert len(ticks) == 5 and ticks[-1] - ticks[0] < 0.25  # ... while the loop kept going
    assert gate.try_acquire()
    gate.release()


@pytest.mark.parametrize("in_pool", [False, True])
def test_without_a_gate_the_write_runs_where_the_settings_say(in_pool: bool) -> None:
    context = _context("postgresql://nobody@127.0.0.1:1/none", writes_in_thread_pool=in_pool)
    seen: dict[str, Any] = {}

    async def main() -> int:
        await run_short_write(context, _work(seen), "no gate")
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert seen["gate_held"] is False
    assert (seen["thread"] != loop_thread) is in_pool
    # on the loop it must not wait for locks; in the pool it may
    assert seen["wait_for_locks"] == [in_pool]


def test_a_write_that_would_wait_for_a_lock_waits_in_the_thread_pool() -> None:
    context = _context("postgresql://nobody@127.0.0.1:1/none")
    seen: dict[str, Any] = {}

    async def main() -> tuple[str, int]:
        return await run_short_write(context, _work(seen), "locked"), threading.get_ident()

    result, loop_thread = asyncio.run(main())
    assert result == "locked"
    assert seen["wait_for_locks"] == [False, True]  # tried on the loop, then waited ...
    assert seen["thread"] != loop_thread  # ... off it
