"""Running the registry: uvicorn over mutual TLS, one or several worker processes.

uvicorn builds its own SSL context from file names; ours also checks the CRL and asks for a
client certificate without requiring one, so :class:`RegistryConfig` swaps it in after
uvicorn's ``load()`` — in every worker, since each worker loads the config anew. The HTTP
protocol is :class:`~clientregistry.api.tls.HttpToolsTLSProtocol` (uvicorn's httptools
protocol, which hands the client certificate to the application) on uvloop's event loop
where uvloop exists (not on Windows); both cut the server's time per request.

With an audit repository configured (``[atna]``), one process beside the workers sends it
the audit trail (:mod:`clientregistry.registry.atna_sender`).

Logs follow ``server.log_format`` (:mod:`clientregistry.log_format`); the request log is the
application's (:mod:`clientregistry.api.observer`, with request ids), not uvicorn's. With
metrics configured and several workers, the workers count into files of a fresh directory
(prometheus-client's multiprocess mode), removed when the server stops; a metrics port is
served by this (the main) process (:func:`clientregistry.api.metrics.start_metrics_port`).

SIGHUP reloads the TLS certificates (``certs server`` renews the server's) in every worker,
without a restart: new connections get the new certificate, open ones keep theirs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import ssl
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from clientregistry.api.tls import HttpToolsTLSProtocol
from clientregistry.log_format import drain_logs_on_signals, log_config
from clientregistry.registry.atna_sender import AtnaSenderProcess
from clientregistry.registry.job_runner import JobRunnerProcess
from clientregistry.security.tls import request_reload, ssl_server_context
from clientregistry.settings import Settings
from clientregistry.store.checkpoint_process import EXTERNAL_CHECKPOINTS, CheckpointerProcess
from clientregistry.store.db import sqlite_file

WORKER_HEALTHCHECK_SECONDS = 60
"""How long a worker process may leave its supervisor's ping unanswered before it is replaced."""


class RegistryConfig(uvicorn.Config):
    """uvicorn's Config with the registry's TLS context, which SIGHUP reloads. uvicorn itself
    gets no SSL context: the protocol (:mod:`clientregistry.api.tls`) runs each handshake
    with ``tls_context``, so that it can log and audit the ones it refuses."""

    certs_dir: Path
    tls_context: ssl.SSLContext | None = None

    def configure_logging(self) -> None:
        # (in each serving process's main thread, before uvicorn takes over its signals)
        super().configure_logging()
        drain_logs_on_signals((signal.SIGINT, signal.SIGTERM))

    def load(self) -> None:
        super().load()
        self.tls_context = ssl_server_context(Path(os.environ["CR_CERTS_DIR"]))
        self.ssl = None
        # (in each serving process's main thread: a worker, or the server with one worker)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: request_reload())


class RegistryWorkers(Multiprocess):
    """uvicorn's worker supervisor, passing SIGHUP on to the workers (each reloads its TLS
    certificates and goes on serving) instead of restarting them."""

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)


def serve(settings: Settings) -> None:
    """Serve HTTPS until interrupted."""
    os.environ["CR_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["CR_CERTS_DIR"] = str(settings.certs_dir.resolve())
    # The workers read config.toml again: give them the base URL this process resolved
    # (``serve --port`` changes the default one).
    os.environ["CR_SERVER_BASE_URL"] = settings.public_base_url
    metrics_dir = None
    if settings.metrics_enabled and settings.workers > 1:
        # Before any worker starts (they import prometheus-client afresh).
        metrics_dir = tempfile.mkdtemp(prefix="clientregistry-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    certs = settings.certs_dir
    config = RegistryConfig(
        "clientregistry.api.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=HttpToolsTLSProtocol,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        ssl_certfile=str(certs / "server.pem"),
        ssl_keyfile=str(certs / "server-key.pem"),
        proxy_headers=False,
        server_header=False,
        log_level="info",
        log_config=log_config(settings.log_format),
        access_log=False,  # the application logs requests (with their ids)
        timeout_keep_alive=30,
        # uvicorn kills a worker that does not answer its supervisor's ping within this many
        # seconds (5 by default). A worker opening a large registry (term counts, the heap
        # frozen at startup) or on a busy machine can hold the interpreter that long, and was
        # killed and restarted in a loop; a hung worker is still replaced, only later.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
    checkpointer = None
    if sqlite_file(settings.database) is not None:
        # One checkpointer for all workers, in its own process (see checkpoint_process).
        os.environ[EXTERNAL_CHECKPOINTS] = "1"
        checkpointer = CheckpointerProcess(settings.database)
        checkpointer.start()
    jobs = JobRunnerProcess(settings.data_dir)  # imports, re-matches, exports
    jobs.start()
    forwarder = None
    if settings.atna is not None:  # the audit trail to the audit repository (ATNA)
        forwarder = AtnaSenderProcess(settings.data_dir)
        forwarder.start()
    from clientregistry.api.metrics import start_metrics_port

    exposition = None
    try:
        exposition = start_metrics_port(settings)
        server = uvicorn.Server(config)
        if settings.workers > 1:
            sock = config.bind_socket()
            RegistryWorkers(config, sockets=[sock]).run()
        else:
            server.run()
    finally:
        jobs.stop()
        if forwarder is not None:
            forwarder.stop()
        if exposition is not None:
            exposition[0].shutdown()
            exposition[2].dispose()
        if checkpointer is not None:
            checkpointer.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
