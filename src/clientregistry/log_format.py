"""How the server logs: readable lines (``server.log_format = "text"``, uvicorn's own) or
one JSON object a line (``"json"``), for a log collector.

A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, the id of
the request being served when there is one (``request_id``), the fields a record carries
(``extra={"fields": {...}}``: the request log's method, route, status …) and, for an error,
the ``exception``. :func:`log_config` is the ``logging.config`` dictionary uvicorn applies in
the server and in each worker.

Lines are formatted where they are logged and written by a thread of their own
(:class:`BackgroundStreamHandler`): a write to a file or a pipe can wait (a disk busy
flushing, a full pipe), and the event loop must not wait with it. With the loop writing a
request line per submission (and metrics on), a busy machine gave medians of 64-120 ms
instead of 17-22 ms in two rounds of three, for little more CPU (``bench/RESULTS.md``); the
run to confirm that the writes were the cause is still to be made.
"""

from __future__ import annotations

import atexit
import logging
import queue
import signal
import sys
import threading
import weakref
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from types import FrameType
from typing import Any, TextIO

import orjson
from uvicorn.config import LOGGING_CONFIG

from clientregistry.request_id import current_request_id


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            document["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class RequestIdText(logging.Formatter):
    """uvicorn's readable line, with ``[request id]`` after the level inside a request."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = current_request_id()
        text = super().format(record)
        return text if request_id is None else f"{text} [{request_id}]"


class BackgroundStreamHandler(QueueHandler):
    """Formats a record in the logging thread, writes it to ``stream`` (standard error) from a
    thread of its own; what is queued is written when the process exits, or when a signal
    ends it (:func:`drain_logs_on_signals`)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(queue.SimpleQueue())
        self.listener = QueueListener(self.queue, logging.StreamHandler(stream or sys.stderr))
        self.listener.start()
        self._running = True
        _HANDLERS.add(self)
        atexit.register(self.stop_writing)

    def drain(self) -> None:
        """Write everything queued so far (the writing thread ends once the queue is empty,
        and a new one takes over)."""
        if self._running:
            self.listener.stop()
            self.listener.start()

    def stop_writing(self) -> None:
        """Write everything queued and end the writing thread."""
        if self._running:
            self._running = False
            self.listener.stop()


_HANDLERS: weakref.WeakSet[BackgroundStreamHandler] = weakref.WeakSet()


def drain_logs() -> None:
    """Write every line the process's :class:`BackgroundStreamHandler` hold queued."""
    for handler in list(_HANDLERS):
        handler.drain()


def drain_logs_on_signals(signals: tuple[signal.Signals, ...]) -> None:
    """Write the queued lines before ``signals`` end the process.

    uvicorn ends a server process by raising the signal that stopped it again, with the
    handler there was before it served: for SIGTERM the default one, which ends the process at
    once, without ``atexit`` — the server's last lines ("Application shutdown complete")
    were lost with the queue. The handler installed here writes them, then puts the previous
    handler back and raises the signal again. Only from the main thread (elsewhere it does
    nothing: Python sets signal handlers there alone).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signals:
        previous = signal.getsignal(signum)

        def drain_then_raise(
            number: int, _frame: FrameType | None, previous: Any = previous
        ) -> None:
            drain_logs()
            signal.signal(number, previous)
            signal.raise_signal(number)

        signal.signal(signum, drain_then_raise)


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``log_format`` (``text`` or ``json``); the registry's own
    loggers (``clientregistry.*``) go the same way, at INFO."""
    json_lines = log_format == "json"
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if json_lines
        else {"()": f"{__name__}.RequestIdText", "fmt": "%(levelname)s:     %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"registry": formatter, **LOGGING_CONFIG["formatters"]},
        "handlers": {
            "registry": {"formatter": "registry", "()": f"{__name__}.BackgroundStreamHandler"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["registry"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["registry"], "level": "INFO", "propagate": False},
            "clientregistry": {"handlers": ["registry"], "level": "INFO", "propagate": False},
        },
    }
