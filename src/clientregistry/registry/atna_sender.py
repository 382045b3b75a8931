"""Sending the audit trail to an audit repository (IHE ATNA, ITI-20), in order and once.

The ``audit_event`` table is the outbox: every event is already there, numbered without gaps
in commit order by the hash chain (``chain_seq``, :mod:`clientregistry.store.audit_chain`).
``audit_delivery`` holds, per repository, the ``chain_seq`` of the last event delivered. The
:class:`AuditForwarder` reads the events after it, in order, writes each as an RFC 5424 syslog
message over TLS (RFC 5425, octet-counting framing: :mod:`~clientregistry.registry.atna_message`),
notes where each message ends in the connection's byte stream, waits until the repository's
TCP has acknowledged the bytes written (Linux: ``TIOCOUTQ`` reaches 0; ``tcpi_bytes_acked``
says how far it got), and only then commits the cursor past the messages acknowledged in
full. While the repository is down nothing is lost and nothing waits: requests only append
to the table (the forwarder runs in a process of its own, :class:`AtnaSenderProcess`), and it
retries with a growing pause (at most :data:`MAX_RETRY_SECONDS`); the
``clientregistry_audit_backlog`` metric shows what is pending.

How exact "once" is (syslog over TLS has no application-level acknowledgement):

* a connection the repository closed is noticed before the next write (the socket turns
  readable at end of stream); a batch cut short by a stop or reset of the repository is
  committed up to its last acknowledged message and the rest written again on a new
  connection: nothing skipped, nothing repeated;
* **duplicates**: if the forwarder itself dies after the repository acknowledged messages
  but before the cursor's commit (a few milliseconds per batch of at most :data:`BATCH`),
  those are sent again when it restarts. Each message carries its ``sequenceId`` (its chain
  place), so a repeat is visible to the repository;
* **loss from the repository's side**: TCP's acknowledgement means the repository's kernel
  has the bytes, not that the repository stored them; a repository that crashes with
  received but unread bytes loses them. The events remain in the registry's own trail
  (``clientregistry audit export``);
* where the acknowledged byte count is not available (not Linux), a batch is taken as
  delivered once written.

Events recorded before the forwarder first ran for a repository are not sent (the cursor
starts at the chain's head then); export them if the repository needs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import select
import signal
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Final

from sqlalchemy import insert, update
from sqlalchemy import select as select_rows
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.registry.atna_message import frame, syslog_message
from clientregistry.registry.atna_settings import AtnaSettings
from clientregistry.store.audit_chain import CHAINED_COLUMNS
from clientregistry.store.db import transaction
from clientregistry.store.errors import StoreError
from clientregistry.store.models import AuditChainHead, AuditDelivery, AuditEvent

log = logging.getLogger(__name__)

BATCH: Final = 50
"""Events written before the cursor is committed (what a crash may send twice)."""
POLL_SECONDS: Final = 0.5
"""How often an idle forwarder looks for new events."""
MAX_RETRY_SECONDS: Final = 30.0
ACK_SECONDS: Final = 15.0
"""How long the repository's TCP may take to acknowledge a batch before it is written again
on a new connection."""


class DeliveryFailed(Exception):
    """The repository could not be reached or did not take a batch."""


class PartialDelivery(DeliveryFailed):
    """The repository acknowledged only the first ``acknowledged`` events of a batch."""

    def __init__(self, acknowledged: int, message: str) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


def tls_context(settings: AtnaSettings) -> ssl.SSLContext:
    """TLS 1.2+ to the repository: its certificate checked against ``ca_file`` and its name,
    this registry's certificate presented (mutual TLS, as ATNA's secure node asks)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


def _unacknowledged(sock: socket.socket) -> int | None:
    """Bytes written to ``sock`` its peer's TCP has not acknowledged (None: unknown here)."""
    try:
        buffer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("i", buffer)[0])


_TCP_INFO_BYTES_ACKED: Final = 120
"""Offset of ``tcpi_bytes_acked`` (u64) in Linux's ``struct tcp_info`` (kernel 4.1 on)."""


def _bytes_acked(sock: socket.socket) -> int | None:
    """Bytes of this connection its peer's TCP has acknowledged (None: unknown here)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 128)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("Q", info, _TCP_INFO_BYTES_ACKED)[0])


def _written(sock: socket.socket) -> int | None:
    """Bytes written to the connection so far (acknowledged + not yet): where the frame
    just written ends. The queue is read before the acknowledged count, so a frame's end is
    never under-estimated (at worst a frame is taken as unacknowledged and sent again)."""
    queued = _unacknowledged(sock)
    acked = _bytes_acked(sock)
    return None if queued is None or acked is None else queued + acked


def _acknowledged_frames(sock: socket.socket, ends: list[int | None]) -> int:
    """How many of the frames ending at ``ends`` the peer acknowledged, from the first."""
    acked = _bytes_acked(sock)
    if acked is None:
        return 0
    count = 0
    for end in ends:
        if end is None or end > acked:
            break
        count += 1
    return count


_TCP_CLOSE: Final = 7
"""Linux's ``TCP_CLOSE`` state (``tcpi_state``): what a connection is in after a reset."""


def _reset(sock: socket.socket) -> bool:
    """Whether the connection was reset (or failed) rather than acknowledged."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return True
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, AttributeError):
        return False
    return info[0] == _TCP_CLOSE


def _state(sock: socket.socket) -> str:
    """The connection's TCP state and queues, for a message."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return "TCP state unknown"
    unacked = struct.unpack_from("I", info, 24)[0]
    return f"TCP state {info[0]}, {unacked} segments unacknowledged"


class AuditForwarder:
    """Delivers the audit trail to one repository (see the module notes)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: AtnaSettings,
        *,
        hostname: str | None = None,
        batch: int = BATCH,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.hostname = hostname
        self.batch = batch
        self._context: ssl.SSLContext | None = None
        self._sock: ssl.SSLSocket | None = None
        self._stop = threading.Event()
        self._cursor: int | None = None

    # ----------------------------------------------------------------- cursor

    def cursor(self) -> int:
        """The last event delivered (starting at the chain's head the first time); read from
        the database once, then kept (this forwarder is the only one that moves it)."""
        if self._cursor is None:
            self._cursor = self._read_cursor()
        return self._cursor

    def _read_cursor(self) -> int:
        repository = self.settings.repository
        with transaction(self.sessions) as session:
            seq = session.scalar(
                select_rows(AuditDelivery.seq).where(AuditDelivery.repository == repository)
            )
            if seq is not None:
                return int(seq)
            head = session.scalar(select_rows(AuditChainHead.seq)) or 0
            session.execute(
                insert(AuditDelivery).values(repository=repository, seq=head, delivered_at=None)
            )
            log.info("audit repository %s: delivering from event %d on", repository, head + 1)
            return int(head)

    def backlog(self) -> int:
        """Events recorded but not delivered yet."""
        with transaction(self.sessions, write=False) as session:
            head = session.scalar(select_rows(AuditChainHead.seq)) or 0
            seq = session.scalar(
                select_rows(AuditDelivery.seq).where(
                    AuditDelivery.repository == self.settings.repository
                )
            )
        return max(int(head) - int(seq if seq is not None else head), 0)

    def _commit(self, seq: int) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                update(AuditDelivery)
                .where(AuditDelivery.repository == self.settings.repository)
                .values(seq=seq, delivered_at=datetime.now(UTC))
            )
        self._cursor = seq

    def _pending(self, after: int) -> list[dict[str, Any]]:
        table = AuditEvent.__table__
        columns = [table.c[name] for name in ("id", "chain_seq", "chain_hash", *CHAINED_COLUMNS)]
        with transaction(self.sessions, write=False) as session:
            return [
                dict(row._mapping)
                for row in session.execute(
                    select_rows(*columns)
                    .where(AuditEvent.chain_seq > after)
                    .order_by(AuditEvent.chain_seq)
                    .limit(self.batch)
                )
            ]

    # ----------------------------------------------------------------- connection

    def _connect(self) -> ssl.SSLSocket:
        if self._sock is not None:
            if not self._peer_closed(self._sock):
                return self._sock
            log.info("audit repository %s closed the connection", self.settings.repository)
            self.close()
        if self._context is None:
            self._context = tls_context(self.settings)
        settings = self.settings
        try:
            raw = socket.create_connection((settings.host, settings.port), timeout=10)
        except OSError as error:
            raise DeliveryFailed(f"cannot connect: {error}") from None
        try:
            sock = self._context.wrap_socket(
                raw, server_hostname=settings.server_name or settings.host
            )
        except (OSError, ssl.SSLError) as error:
            raw.close()
            raise DeliveryFailed(f"TLS handshake failed: {error}") from None
        sock.settimeout(ACK_SECONDS)
        self._sock = sock
        log.info("connected to audit repository %s", settings.repository)
        return sock

    @staticmethod
    def _peer_closed(sock: ssl.SSLSocket) -> bool:
        """Whether the repository ended the connection (a syslog receiver never writes: a
        readable socket is its end of stream, an alert, or TLS 1.3 session tickets)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        sock.setblocking(False)
        try:
            while True:
                if not sock.recv(4096):
                    return True
        except ssl.SSLWantReadError:
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(ACK_SECONDS)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _write(self, frames: list[bytes]) -> int:
        """Write ``frames`` (one TLS record or more each) and wait until the repository's TCP
        has acknowledged them; how many of them, from the first, it acknowledged. Raises
        :class:`DeliveryFailed` when it did not acknowledge them all (after committing the
        acknowledged ones is up to the caller: see :meth:`deliver_pending`)."""
        sock = self._connect()
        ends: list[int | None] = []
        try:
            for data in frames:
                sock.sendall(data)
                ends.append(_written(sock))
        except (OSError, ssl.SSLError) as error:
            acked = _acknowledged_frames(sock, ends)
            self.close()
            raise PartialDelivery(acked, f"write failed: {error}") from None
        deadline = time.monotonic() + ACK_SECONDS
        pause = 0.0005
        while True:
            pending = _unacknowledged(sock)
            if pending is None:
                return len(frames)  # (no way to know here: taken as delivered)
            if pending == 0 and not _reset(sock):
                return len(frames)
            if pending == 0 or time.monotonic() > deadline or _reset(sock):
                acked = _acknowledged_frames(sock, ends)
                state = _state(sock)
                self.close()
                raise PartialDelivery(
                    acked,
                    f"{len(frames) - acked} of {len(frames)} events not acknowledged ({state})",
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    # ----------------------------------------------------------------- delivery

    def deliver_pending(self) -> int:
        """Deliver what is pending, batch by batch; how many events were delivered.
        Raises :class:`DeliveryFailed` after committing the cursor past the events the
        repository acknowledged."""
        after = self.cursor()
        delivered = 0
        while not self._stop.is_set():
            events = self._pending(after)
            if not events:
                return delivered
            frames = [
                frame(
                    syslog_message(
                        event,
                        message_format=self.settings.format,
                        app_name=self.settings.app_name,
                        hostname=self.hostname,
                    )
                )
                for event in events
            ]
            log.debug("writing events %s–%s", events[0]["chain_seq"], events[-1]["chain_seq"])
            try:
                acked = self._write(frames)
            except PartialDelivery as partial:
                if partial.acknowledged:
                    self._commit(int(events[partial.acknowledged - 1]["chain_seq"]))
                raise
            after = int(events[acked - 1]["chain_seq"])
            self._commit(after)
            delivered += acked
        return delivered

    def stop(self) -> None:
        self._stop.set()

    def run(self, alive: Callable[[], bool] = lambda: True) -> None:
        """Deliver until stopped (or ``alive`` says the server is gone), retrying with a
        growing pause while the repository is unreachable."""
        retry = 1.0
        try:
            while not self._stop.is_set() and alive():
                try:
                    self.deliver_pending()
                    retry = 1.0
                    self._stop.wait(POLL_SECONDS)
                except DeliveryFailed as error:
                    log.warning(
                        "audit repository %s: %s; retrying in %.0f s",
                        self.settings.repository,
                        error,
                        retry,
                    )
                    self._stop.wait(retry)
                    retry = min(retry * 2, MAX_RETRY_SECONDS)
                except StoreError as error:
                    log.warning("audit forwarding: database: %s", error)
                    self._stop.wait(retry)
                    retry = min(retry * 2, MAX_RETRY_SECONDS)
        finally:
            self.close()


def _main(data_dir: str, parent: int, stop: Event) -> None:
    from clientregistry.settings import load_settings
    from clientregistry.store.db import create_engine_for, session_factory

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: audit forwarding: %(message)s")
    settings = load_settings(Path(data_dir))
    if settings.atna is None:
        return
    engine = create_engine_for(settings.database)
    forwarder = AuditForwarder(session_factory(engine), settings.atna)

    def stop_when_asked() -> None:
        stop.wait()
        forwarder.stop()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    try:
        forwarder.run(alive=lambda: os.getppid() == parent)
    finally:
        engine.dispose()


class AtnaSenderProcess:
    """The server's audit forwarder (data directory ``data_dir``), in a child process: one
    for all workers, so events go out once and in order."""

    def __init__(self, data_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=_main,
            args=(str(data_dir), os.getpid(), self._stop),
            name="clientregistry-atna",
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
