"""Running a registry write transaction (one Patient) from the event loop.

A submission's transaction run in the thread pool holds its database work far longer than
the work takes: its thread gives up the interpreter lock at every database call and then
waits for the event-loop thread, busy with other requests' TLS, HTTP and validation, to hand
it back. So a short write runs on the event-loop thread itself, once it may:

* SQLite (one writer at a time, the :class:`~clientregistry.store.write_gate.WriteGate`):
  the write takes its turn without blocking the loop (at once when the gate is open, else
  through a helper thread), then runs on the loop. Two workers at 10,000 records: 260
  instead of 203-237 submissions/s, a median of 7.6 instead of 17-30 ms at 200/s.
* PostgreSQL: the write runs on the loop, which waits out its round trips. Two workers at
  10,000 records, database on the same machine: 241 instead of 192-195 submissions/s, and at
  150/s a median of 11 instead of 21-24 ms. With the database far away each round trip would
  stall the worker, so ``database.writes_in_thread_pool = true`` keeps PostgreSQL writes in
  the thread pool. On the loop the write does not wait for locks: when another transaction
  holds one it needs (the same person submitted by another worker; a transaction Bundle
  holding the whole registry), ``work`` raises
  :class:`~clientregistry.store.errors.WouldWait`, its transaction is rolled back, and it
  runs again in the thread pool, waiting there while the loop serves other requests.

Long writes (Bundles, review actions) always run in the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool

from clientregistry.registry.context import RegistryContext
from clientregistry.store.db import sessions_write_gate
from clientregistry.store.errors import WouldWait

T = TypeVar("T")


async def run_short_write(
    context: RegistryContext,
    work: Callable[..., T],
    *args: object,
) -> T:
    """``work(*args, gate_held=...)`` on this thread: on SQLite once the write turn is taken
    (``gate_held=True``, released afterwards); on PostgreSQL at once, not waiting for locks
    (``wait_for_locks=False``; when it would have to, again in the thread pool), or in the
    thread pool when the settings say ``writes_in_thread_pool``."""
    gate = sessions_write_gate(context.sessions)
    if gate is None:
        if not context.settings.writes_in_thread_pool:
            try:
                return work(*args, gate_held=False, wait_for_locks=False)
            except WouldWait:
                pass  # rolled back; wait for the lock off the loop
        return await run_in_threadpool(work, *args, gate_held=False)
    if not gate.try_acquire():
        # Not cancellable while the helper waits: the turn is never taken and then lost.
        await run_in_threadpool(gate.acquire)
    try:
        return work(*args, gate_held=True)
    finally:
        gate.release()
