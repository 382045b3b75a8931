"""Backing a registry up into one file and restoring it: ``clientregistry backup | restore``.

A backup is a gzip'd tar archive of the data directory (``config.toml``, ``certs/`` with the
certificate authority's private key, anything else kept there) and the database
(:mod:`clientregistry.store.backup`: SQLite's online backup, or ``pg_dump``), with a manifest
(``clientregistry-backup.json``: format, time, database kind, schema revision). It is taken
while the registry runs, and written readable by its owner only (it holds the CA's key and
every record: keep it as safe as the data directory).

Restoring makes a new data directory (absent or empty) and fills an empty database: the
backed-up one's kind, at ``--database-url``, else ``CR_DATABASE_URL``, else the URL in the
backed-up ``config.toml`` (SQLite: the data directory's file). Archive members are checked
(no absolute paths, no ``..``, no links) before anything is written; a backup from a newer
release (a schema this one does not know) is refused.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from clientregistry.errors import ClientRegistryError
from clientregistry.registry.setup import shown
from clientregistry.settings import CONFIG_FILE, Settings, load_settings
from clientregistry.store.backup import dump_database, kind_of, load_database
from clientregistry.store.db import (
    alembic_config,
    create_engine_for,
    current_revision,
    sqlite_file,
)

MANIFEST = "clientregistry-backup.json"
DATABASE_FILES = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
FORMAT = 1


class BackupError(ClientRegistryError):
    """A backup or restore that cannot be done; nothing was written."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    database: str
    schema_revision: str | None
    files: int


def _database_files(settings: Settings) -> set[Path]:
    """The SQLite database's files inside the data directory (copied through the backup
    API, not as files)."""
    path = sqlite_file(settings.database)
    if path is None:
        return set()
    return {Path(f"{path}{suffix}").resolve() for suffix in ("", "-wal", "-shm", "-writer.lock")}


def backup(settings: Settings, output: Path) -> BackupInfo:
    """Write a backup of the registry of ``settings`` to ``output`` (replaced atomically)."""
    kind = kind_of(settings.database)
    engine = create_engine_for(settings.database)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if revision is None:
        raise BackupError(f"the database {shown(settings.database)} holds no registry")
    skipped = _database_files(settings)
    output = output.resolve()
    if output.is_relative_to(settings.data_dir.resolve()):
        raise BackupError(f"{output} is inside the data directory; write the backup elsewhere")
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.fchmod(handle, 0o600)
    files = 0
    try:
        with tempfile.TemporaryDirectory(prefix="clientregistry-backup-") as scratch:
            dump = Path(scratch) / DATABASE_FILES[kind]
            dump_database(settings.database, dump)
            manifest = {
                "format": FORMAT,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "database": kind,
                "schema_revision": revision,
            }
            with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                data = json.dumps(manifest, indent=2).encode()
                member = tarfile.TarInfo(MANIFEST)
                member.size, member.mode = len(data), 0o600
                member.mtime = int(datetime.now(UTC).timestamp())
                tar.addfile(member, io.BytesIO(data))
                tar.add(dump, arcname=dump.name)
                for path in sorted(settings.data_dir.rglob("*")):
                    if path.resolve() in skipped or path.is_symlink() or not path.is_file():
                        continue
                    tar.add(path, arcname=f"data/{path.relative_to(settings.data_dir)}")
                    files += 1
        os.replace(partial, output)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return BackupInfo(output, kind, revision, files)


@dataclass(frozen=True, slots=True)
class RestoreInfo:
    data_dir: Path
    database: str
    schema_revision: str | None


def _checked_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members = {}
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise BackupError(f"not a clientregistry backup: unexpected member {member.name!r}")
        members[str(name)] = member
    if MANIFEST not in members:
        raise BackupError("not a clientregistry backup: no manifest")
    return members


def _read_manifest(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> dict[str, str]:
    extracted = tar.extractfile(members[MANIFEST])
    try:
        manifest = json.loads(extracted.read() if extracted else b"")
    except ValueError:
        raise BackupError("not a clientregistry backup: the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not a clientregistry backup of a format this release reads")
    if manifest.get("database") not in DATABASE_FILES:
        raise BackupError(f"unknown database kind {manifest.get('database')!r} in the backup")
    from alembic.script import ScriptDirectory

    revision = manifest.get("schema_revision")
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        raise BackupError(
            f"the backup's schema revision {revision!r} is unknown to this release (a newer "
            "one made it): restore it with that release"
        )
    return manifest


def _set_database_url(config: Path, url: str) -> None:
    """Point the restored ``config.toml``'s ``[database] url`` at ``url``."""
    text = config.read_text(encoding="utf-8")
    quoted = json.dumps(url)  # a TOML basic string
    replaced, count = re.subn(r'(?m)^url\s*=\s*".*"\s*$', f"url = {quoted}", text, count=1)
    if count == 0:
        replaced = text + f"\n[database]\nurl = {quoted}\n"
    config.write_text(replaced, encoding="utf-8")


def restore(
    archive: Path,
    data_dir: Path,
    *,
    database_url: str = "",
    environ: Mapping[str, str] | None = None,
) -> RestoreInfo:
    """Restore the backup ``archive`` into the new data directory ``data_dir`` and an empty
    database (see the module docstring)."""
    env = dict(environ or {})
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} exists and is not empty; restore makes a new one")
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as error:
        raise BackupError(f"{archive}: cannot read the backup: {error}") from None
    created = not data_dir.exists()
    try:
        with tar, tempfile.TemporaryDirectory(prefix="clientregistry-restore-") as scratch:
            members = _checked_members(tar)
            manifest = _read_manifest(tar, members)
            kind = manifest["database"]
            dump_name = DATABASE_FILES[kind]
            if dump_name not in members or f"data/{CONFIG_FILE}" not in members:
                raise BackupError("the backup lacks its database or configuration")
            tar.extractall(scratch, filter="data")
            data_dir.mkdir(parents=True, exist_ok=True)
            for item in (Path(scratch) / "data").iterdir():
                shutil.move(str(item), data_dir / item.name)
            if database_url:
                _set_database_url(data_dir / CONFIG_FILE, database_url)
                env["CR_DATABASE_URL"] = database_url
            settings = load_settings(data_dir, environ=env)
            target = settings.database
            if kind_of(target) != kind:
                raise BackupError(
                    f"the backup holds a {kind} database and the target {shown(target)} is "
                    f"{kind_of(target)}: restore into the same kind"
                )
            if kind == "postgresql":
                _require_empty(target)
            load_database(target, Path(scratch) / dump_name)
    except BaseException:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for child in data_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return RestoreInfo(data_dir, shown(target), manifest.get("schema_revision"))


def _require_empty(url: str) -> None:
    engine = create_engine_for(url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if revision is not None:
        raise BackupError(
            f"the database {shown(url)} already holds a registry (schema {revision}); restore "
            "into an empty database"
        )
