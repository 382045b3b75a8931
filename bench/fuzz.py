"""Fuzzing as a habit: schemathesis against the registry's own OpenAPI description.

``python bench/fuzz.py [--max-time 60] [--database-url postgresql://…] [--seed N]`` does:

1. ``init`` a fresh data directory in a temporary directory (SQLite, or a fresh PostgreSQL
   database next to ``--database-url``'s, dropped at the end) with a ``hie`` system that may
   read demographics, an account of each role, and one submitted Patient;
2. serves it (``clientregistry serve`` on a free port, loopback only);
3. runs ``schemathesis run https://…/openapi.json`` once per caller (:func:`callers`): the
   admin API (``/auth``, ``/admin``) as admin, reviewer, auditor and nobody; the FHIR routes
   (``/fhir``) with the ``openmrs`` certificate (submits), the ``hie`` certificate (reads
   demographics) and none. Each run has ``--max-time`` seconds (examples from the schema,
   the coverage phase's edge cases, then random fuzzing until the time is spent) and checks
   that no answer is a 5xx (``not_a_server_error``) and that every status, content type and
   header is one the description documents (``status_code_conformance``,
   ``content_type_conformance``, ``response_headers_conformance``);
4. prints schemathesis' report per caller and exits 1 when any run failed.

``/auth/logout`` is left out of runs with a token (it would end the token mid-run).
``tests/api/test_fuzz.py`` runs the same callers, for a few seconds each, on every
``make test``: the habit. Run this script for longer (minutes) before a release, or with
another ``--seed``; a failure prints the ``curl`` command that reproduces it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ADMIN_PATHS = "^/(auth|admin)(/|$)"
FHIR_PATHS = "^/fhir(/|$)"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance"
)
ROLES = ("admin", "reviewer", "auditor")
PASSWORD = "fuzzing " + secrets.token_hex(8)


@dataclass(frozen=True)
class Caller:
    """Who schemathesis calls as, and which operations it calls."""

    name: str
    paths: str
    headers: dict[str, str] = field(default_factory=dict)
    cert: Path | None = None
    key: Path | None = None
    exclude_paths: tuple[str, ...] = ()


def callers(certs_dir: Path, tokens: dict[str, str]) -> list[Caller]:
    """The admin API as each role and as nobody; the FHIR routes as a submitting system, a
    reading system and nobody."""
    clients = certs_dir / "clients"
    found = [
        Caller(
            f"admin API as {role}",
            ADMIN_PATHS,
            {"Authorization": f"Bearer {token}"},
            exclude_paths=("/auth/logout",),
        )
        for role, token in tokens.items()
    ]
    found.append(Caller("admin API without a token", ADMIN_PATHS))
    for system in ("openmrs", "hie"):
        found.append(
            Caller(
                f"FHIR as {system}",
                FHIR_PATHS,
                cert=clients / f"{system}.pem",
                key=clients / f"{system}-key.pem",
            )
        )
    found.append(Caller("FHIR without a certificate", FHIR_PATHS))
    return found


def run(
    base_url: str,
    ca_file: Path,
    caller: Caller,
    *,
    max_time: int,
    seed: int | None = None,
    max_examples: int | None = None,
    baseline: Path | None = None,
    update_baseline: bool = False,
) -> subprocess.CompletedProcess[str]:
    """One schemathesis run as ``caller`` (its output in ``stdout``; exit status 0 = clean).
    Failures listed in ``baseline`` pass; ``update_baseline`` adds this run's to it."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--include-path-regex",
        caller.paths,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-time",
        str(max_time),
        "--workers",
        "1",
        "--tls-verify",
        str(ca_file),
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    for path in caller.exclude_paths:
        command += ["--exclude-path", path]
    for name, value in caller.headers.items():
        command += ["--header", f"{name}: {value}"]
    if caller.cert is not None:
        command += ["--request-cert", str(caller.cert), "--request-cert-key", str(caller.key)]
    if seed is not None:
        command += ["--seed", str(seed)]
    if max_examples is not None:
        command += ["--max-examples", str(max_examples)]
    if baseline is not None and (baseline.exists() or update_baseline):
        command += ["--baseline", str(baseline)]
        if update_baseline:
            command += ["--baseline-update"]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    with tempfile.TemporaryDirectory(prefix="cr-schemathesis-") as workdir:  # its cache
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=workdir,
            timeout=max_time * 3 + 120,
            check=False,
        )


# ----------------------------------------------------------------------------- a registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _database(base_url: str) -> Iterator[str]:
    if not base_url:
        yield ""
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"cr_fuzz_{uuid.uuid4().hex[:12]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(data_dir: Path, database_url: str) -> None:
    """A data directory with the ``hie`` reader and an account of each role."""
    from clientregistry.registry.context import RegistryContext
    from clientregistry.registry.setup import add_system_to_config, init_data_dir
    from clientregistry.security.authority import CertificateAuthority
    from clientregistry.security.users import add_user
    from clientregistry.settings import ClientSystemConfig, load_settings
    from clientregistry.store.db import transaction

    init_data_dir(data_dir, hostnames=[], database_url=database_url)
    CertificateAuthority.load(data_dir / "certs").issue_client("hie")
    reader = ClientSystemConfig(
        "hie", "HIE", "http://clientregistry.org/hie", ("read-identifiers", "read-demographics")
    )
    add_system_to_config(data_dir, reader)
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        with transaction(context.sessions) as session:
            for role in ROLES:
                add_user(session, f"fuzz-{role}", PASSWORD, role)
    finally:
        context.close()


@contextlib.contextmanager
def serving(data_dir: Path, log_path: Path) -> Iterator[str]:
    """``clientregistry serve`` on a free loopback port until the block ends; its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    command = [str(Path(sys.executable).with_name("clientregistry")), "serve"]
    command += ["--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        base_url = f"https://localhost:{port}"
        try:
            _wait(base_url, data_dir / "certs" / "ca.pem", process)
            yield base_url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _wait(base_url: str, ca: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the registry exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            trust = ssl.create_default_context(cafile=str(ca))
            if httpx.get(f"{base_url}/fhir/metadata", verify=trust, timeout=2).is_success:
                return
        time.sleep(0.2)
    raise RuntimeError("the registry did not start within 60 s")


def tokens(base_url: str, ca: Path) -> dict[str, str]:
    """A bearer token of each role's account."""
    found = {}
    for role in ROLES:
        response = httpx.post(
            f"{base_url}/auth/token",
            json={"username": f"fuzz-{role}", "password": PASSWORD},
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=30,
        )
        response.raise_for_status()
        found[role] = response.json()["access_token"]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=int, default=60, help="seconds per caller")
    parser.add_argument("--database-url", default="", help="PostgreSQL server (default SQLite)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    failed = []
    with (
        tempfile.TemporaryDirectory(prefix="cr-fuzz-") as temp,
        _database(args.database_url) as url,
    ):
        data_dir = Path(temp) / "data"
        prepare(data_dir, url)
        certs = data_dir / "certs"
        with serving(data_dir, Path(temp) / "server.log") as base_url:
            for caller in callers(certs, tokens(base_url, certs / "ca.pem")):
                result = run(
                    base_url, certs / "ca.pem", caller, max_time=args.max_time, seed=args.seed
                )
                print(f"==== {caller.name}: exit {result.returncode}")
                print(result.stdout[-20_000:], result.stderr[-5_000:], sep="\n")
                if result.returncode != 0:
                    failed.append(caller.name)
        if failed:
            print("server log (tail):\n" + (Path(temp) / "server.log").read_text()[-10_000:])
    print("failed:", ", ".join(failed) if failed else "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
