"""Copying a registry's database to a file and back, while the registry runs.

* SQLite: the online backup API (:meth:`sqlite3.Connection.backup`), which copies a
  consistent snapshot page by page while writers go on (a write in between makes it copy the
  changed pages again); the copy is an ordinary SQLite file.
* PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, in a transaction of its
  own) and ``pg_restore`` into an empty database; the client programs come with PostgreSQL
  (Debian: ``postgresql-client``), and their version must be at least the server's. The
  password travels in ``PGPASSWORD``, never on the command line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from clientregistry.store.db import sqlite_file
from clientregistry.store.errors import StoreError

SQLITE_PAGES_PER_STEP = 4096
"""Pages copied between two looks at the source (writers get their turn in between)."""


def kind_of(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def dump_database(url: str, target: Path) -> None:
    """Copy the database at ``url`` into the file ``target``."""
    if kind_of(url) == "sqlite":
        _sqlite_backup(url, target)
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(target)],
             url)  # fmt: skip


def load_database(url: str, source: Path) -> None:
    """Fill the (new, or empty) database at ``url`` from ``source`` (a :func:`dump_database`
    file of the same kind)."""
    if kind_of(url) == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise StoreError(f"cannot restore into {url!r}: not a SQLite file")
        if path.exists():
            raise StoreError(f"{path} exists; restore writes a new database file only")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return
    _run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
         str(source)],
        url,
    )  # fmt: skip


def _sqlite_backup(url: str, target: Path) -> None:
    path = sqlite_file(url)
    if path is None or not path.is_file():
        raise StoreError(f"no SQLite database at {url!r}")
    try:
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            destination = sqlite3.connect(target)
            try:
                source.backup(destination, pages=SQLITE_PAGES_PER_STEP)
            finally:
                destination.close()
        finally:
            source.close()
    except sqlite3.Error as error:
        raise StoreError(f"cannot copy {path}: {error}") from None


def _libpq_environment(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for ``url`` without its password, and the environment that
    carries the password (and the URL's ``options``)."""
    parsed = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    options = parsed.query.get("options")
    if options:
        env["PGOPTIONS"] = options if isinstance(options, str) else " ".join(options)
    parts = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "dbname": parsed.database,
    }
    conninfo = " ".join(
        f"{key}='{str(value).replace(chr(39), chr(92) + chr(39))}'"
        for key, value in parts.items()
        if value
    )
    return conninfo, env


def _run(command: list[str], url: str) -> None:
    program = command[0]
    if shutil.which(program) is None:
        raise StoreError(
            f"{program} is not installed: it comes with PostgreSQL's client programs "
            "(Debian: apt-get install postgresql-client)"
        )
    conninfo, env = _libpq_environment(url)
    done = subprocess.run(
        [*command, "--dbname", conninfo], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        raise StoreError(f"{program} failed: {message[-1] if message else done.returncode}")
