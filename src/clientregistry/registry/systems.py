"""The client systems of a registry: who may call it with a certificate, and what they may do.

The database (``client_system``) holds them, so that every worker of every host sees the same
systems and a change needs no restart. ``config.toml``'s ``[systems]`` tables seed it: a
system named there that the database does not have yet is imported when the registry opens
(``serve``, ``init``); one that differs from the database is reported, and the database wins
(change it with ``clientregistry systems …``).

A server process keeps the systems in memory, in a :class:`SystemDirectory` that takes the
place of ``settings.systems``: a request finds its system with a dictionary look-up. A
:class:`SystemsWatcher` thread asks the database for the table's change stamp (its row
count and the sum and highest of its ``revision`` counters: one small query) every
:data:`POLL_SECONDS` and reloads the table when the stamp moved; every change raises the
changed row's ``revision`` above all others, so a change made by another process reaches
every worker within a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.errors import ClientRegistryError
from clientregistry.settings import KNOWN_PERMISSIONS, ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.errors import StoreError
from clientregistry.store.models import ClientSystem

log = logging.getLogger(__name__)

PERMISSION_ORDER = ("submit", "read-identifiers", "read-demographics")
"""How permissions are listed: from the least to the most a system may do."""

POLL_SECONDS = 0.5
"""How often a server process checks the systems for changes."""

Stamp = tuple[int, int, int]
"""(rows, highest revision, sum of revisions): moves with every change of the table."""


class SystemRefused(ClientRegistryError):
    """A change of the client systems that cannot be made (unknown system, bad permission,
    an internal identifier system another system holds); nothing was changed."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class StoredSystem:
    """A client system as the database holds it (``systems list``)."""

    config: ClientSystemConfig
    cert_serial: str | None
    revoked: bool
    revision: int


class SystemDirectory(Mapping[str, ClientSystemConfig]):
    """The client systems by name, as last loaded; :meth:`replace` swaps in a new set at once
    (a reference swap: a request sees the old set or the new one, never a mixture)."""

    def __init__(self, systems: Mapping[str, ClientSystemConfig], stamp: Stamp | None = None):
        self._systems: dict[str, ClientSystemConfig] = dict(systems)
        self.stamp = stamp

    def __getitem__(self, name: str) -> ClientSystemConfig:
        return self._systems[name]

    def get(self, name: str, default: Any = None) -> Any:  # a dict's get, for speed
        return self._systems.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._systems)

    def __len__(self) -> int:
        return len(self._systems)

    def __contains__(self, name: object) -> bool:
        return name in self._systems

    def replace(self, systems: Mapping[str, ClientSystemConfig], stamp: Stamp) -> None:
        self._systems = dict(systems)
        self.stamp = stamp


# ----------------------------------------------------------------------------- reading


def _config(row: ClientSystem) -> ClientSystemConfig:
    permissions = row.permissions if isinstance(row.permissions, list) else []
    return ClientSystemConfig(
        row.name, row.display_name, row.internal_id_system or "", tuple(permissions)
    )


def stored_systems(session: Session) -> list[StoredSystem]:
    """Every system in the database, by name."""
    rows = session.scalars(select(ClientSystem).order_by(ClientSystem.name)).all()
    return [StoredSystem(_config(r), r.cert_serial, r.revoked, r.revision) for r in rows]


def change_stamp(session: Session) -> Stamp:
    """The table's change stamp (one aggregate query)."""
    rows, highest, total = session.execute(
        select(
            func.count(),
            func.coalesce(func.max(ClientSystem.revision), 0),
            func.coalesce(func.sum(ClientSystem.revision), 0),
        ).select_from(ClientSystem)
    ).one()
    return int(rows), int(highest), int(total)


def load_directory(sessions: sessionmaker[Session]) -> SystemDirectory:
    """The systems in the database, with the stamp they were read at."""
    with transaction(sessions, write=False) as session:
        stamp = change_stamp(session)
        systems = {s.config.name: s.config for s in stored_systems(session)}
    return SystemDirectory(systems, stamp)


def open_directory(
    sessions: sessionmaker[Session], configured: Iterable[ClientSystemConfig], *, seed: bool
) -> tuple[SystemDirectory, list[str]]:
    """The systems in the database; with ``seed``, after importing the configured ones it
    lacks (:func:`import_configured`, whose warnings come back too)."""
    warnings: list[str] = []
    if seed:
        with transaction(sessions) as session:
            warnings = import_configured(session, configured)
    return load_directory(sessions), warnings


# ----------------------------------------------------------------------------- changing


def _next_revision(session: Session) -> int:
    highest = session.scalar(select(func.coalesce(func.max(ClientSystem.revision), 0)))
    return int(highest or 0) + 1


def _require(session: Session, name: str) -> ClientSystem:
    row = session.get(ClientSystem, name)
    if row is None:
        raise SystemRefused(f"no client system {name!r} (`clientregistry systems list`)")
    return row


def _holder_of(session: Session, uri: str) -> str | None:
    return session.scalar(select(ClientSystem.name).where(ClientSystem.internal_id_system == uri))


def _rank(permission: str) -> int:
    return PERMISSION_ORDER.index(permission) if permission in PERMISSION_ORDER else 99


def check_permission(permission: str) -> str:
    if permission not in KNOWN_PERMISSIONS:
        known = ", ".join(sorted(KNOWN_PERMISSIONS))
        raise SystemRefused(f"unknown permission {permission!r}; the permissions are: {known}")
    return permission


def check_new_system(session: Session, name: str, internal_id_system: str) -> None:
    """Refuse to register ``name`` with ``internal_id_system`` when another system holds that
    identifier system (each system's record ids must be its own)."""
    holder = _holder_of(session, internal_id_system)
    if holder is not None and holder != name:
        raise SystemRefused(
            f"the internal identifier system {internal_id_system} already belongs to system "
            f"{holder!r}; give {name!r} its own (--internal-id-system URI)"
        )


def add_system(
    session: Session, system: ClientSystemConfig, *, cert_serial: str | None = None
) -> None:
    """Register a new system (refused when the name or its identifier system is taken)."""
    if session.get(ClientSystem, system.name) is not None:
        raise SystemRefused(f"client system {system.name!r} exists already")
    check_new_system(session, system.name, system.internal_id_system)
    for permission in system.permissions:
        check_permission(permission)
    session.add(
        ClientSystem(
            name=system.name,
            display_name=system.display_name,
            internal_id_system=system.internal_id_system,
            permissions=list(system.permissions),
            cert_serial=cert_serial,
            revoked=False,
            revision=_next_revision(session),
        )
    )
    session.flush()


def set_permissions(session: Session, name: str, permissions: Iterable[str]) -> tuple[str, ...]:
    """Give ``name`` exactly ``permissions``; returns what it held before."""
    before = stored_permissions(session, name)
    wanted = sorted({check_permission(p) for p in permissions}, key=_rank)
    _touch(session, name, permissions=wanted)
    return before


def stored_permissions(session: Session, name: str) -> tuple[str, ...]:
    """What ``name`` may do, as stored."""
    return tuple(_require(session, name).permissions or ())


def grant(session: Session, name: str, permission: str) -> tuple[str, ...]:
    """Add ``permission`` to ``name``'s (nothing changes when it holds it); returns the
    permissions before."""
    held = stored_permissions(session, name)
    if check_permission(permission) in held:
        return held
    return set_permissions(session, name, {*held, permission})


def revoke_permission(session: Session, name: str, permission: str) -> tuple[str, ...]:
    """Take ``permission`` from ``name``; returns the permissions before."""
    held = stored_permissions(session, name)
    if check_permission(permission) not in held:
        raise SystemRefused(f"{name!r} does not hold {permission!r}; nothing was changed")
    return set_permissions(session, name, set(held) - {permission})


def record_certificate(session: Session, name: str, serial: int, *, revoked: bool) -> None:
    """Note ``name``'s current certificate (issued, or revoked)."""
    _require(session, name)
    _touch(session, name, cert_serial=f"{serial:x}", revoked=revoked)


def _touch(session: Session, name: str, **values: Any) -> None:
    session.execute(
        update(ClientSystem)
        .where(ClientSystem.name == name)
        .values(revision=_next_revision(session), **values)
    )
    session.expire_all()


# ----------------------------------------------------------------------------- configuration


def import_configured(session: Session, configured: Iterable[ClientSystemConfig]) -> list[str]:
    """Add the configured systems the database does not have yet; returns a warning for each
    configured system that differs from the database (which wins)."""
    warnings: list[str] = []
    for system in configured:
        row = session.get(ClientSystem, system.name)
        if row is None:
            add_system(session, system)
            continue
        stored = _config(row)
        if stored != system:
            differences = [
                f"{key} {getattr(stored, key)!r} (config.toml: {getattr(system, key)!r})"
                for key in ("display_name", "internal_id_system", "permissions")
                if getattr(stored, key) != getattr(system, key)
            ]
            warnings.append(
                f"config.toml [systems.{system.name}] differs from the database, which holds "
                f"the systems: {'; '.join(differences)}. The database's is used; change it "
                "with `clientregistry systems grant|revoke-permission`"
            )
    return warnings


# ----------------------------------------------------------------------------- watching


class SystemsWatcher:
    """A daemon thread that reloads ``directory`` when the table's stamp moves and then calls
    ``on_change`` (the context updates its matcher's record-id systems)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        directory: SystemDirectory,
        on_change: Callable[[SystemDirectory], None],
        interval: float = POLL_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.directory = directory
        self.on_change = on_change
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="client-systems-watcher", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def check(self) -> bool:
        """Reload when the table changed; whether it did."""
        with transaction(self.sessions, write=False) as session:
            stamp = change_stamp(session)
            if stamp == self.directory.stamp:
                return False
            systems = {s.config.name: s.config for s in stored_systems(session)}
        self.directory.replace(systems, stamp)
        self.on_change(self.directory)
        log.info("client systems reloaded: %s", ", ".join(sorted(systems)) or "none")
        return True

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.check()
                failing = False
            except StoreError as error:
                if not failing:  # once per outage, not twice a second
                    log.warning("cannot check the client systems for changes: %s", error)
                failing = True
