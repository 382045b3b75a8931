"""What the use cases share in one process: settings, database, matcher, term counts.

The matcher follows the decision rules in force (:mod:`clientregistry.registry.rules_in_force`):
a serving process looks every :data:`RULES_POLL_SECONDS` whether they changed and rebuilds
it, so every worker of a server matches under new rules within about a second of their
switch (:meth:`RegistryContext.refresh_rules`; a bulk job also asks at each batch).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.errors import ClientRegistryError
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.metrics import watch_pool
from clientregistry.registry.rules_in_force import (
    STATE_ID,
    InForce,
    MatcherSpec,
    configuration_spec,
    read_in_force,
)
from clientregistry.registry.stored_features import bring_up_to_date
from clientregistry.registry.systems import SystemDirectory, SystemsWatcher, open_directory
from clientregistry.settings import Settings
from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import (
    create_engine_for,
    migrate,
    session_factory,
    sqlite_file,
    translate_errors,
)
from clientregistry.store.errors import StoreError
from clientregistry.store.models import RulesState
from clientregistry.store.term_counts import load_term_counts

log = logging.getLogger(__name__)

RULES_POLL_SECONDS = 0.5
"""How often a serving process looks whether the rules in force changed."""

__all__ = ["MatcherSpec", "RegistryContext"]


@dataclass
class RegistryContext:
    """One registry process: its settings, database and matcher.

    Term counts are loaded once and kept up to date by this process's own submissions; with
    several workers each sees the others' submissions at its next start. They only nudge
    weights on names, so a little staleness changes scores by hundredths.
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    matcher: Matcher
    term_counts: TermCounts
    checkpointer: WalCheckpointer | None = None
    """On SQLite files opened ``serving``: checkpoints the log in the background (call
    :meth:`start`)."""
    systems_watcher: SystemsWatcher | None = None
    """Opened ``serving``: reloads ``settings.systems`` when the database's change (call
    :meth:`start`)."""
    in_force: InForce | None = None
    """The rules :attr:`matcher` was built from."""
    watch_rules: bool = False
    """Whether :meth:`start` starts a thread that follows the rules in force."""
    rederived: int | None = None
    """Records whose features and blocking keys opening derived again
    (:mod:`~clientregistry.registry.stored_features`); ``None``: none had to be."""
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop_watching: threading.Event = field(default_factory=threading.Event, repr=False)
    _watcher: threading.Thread | None = field(default=None, repr=False)

    @property
    def spec(self) -> MatcherSpec | None:
        """The spec of the rules in force (what an import's reader builds its matcher from:
        see :attr:`in_force` for the whole state)."""
        return None if self.in_force is None else self.in_force.active

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        run_migrations: bool = True,
        serving: bool = False,
        checkpoint_thread: bool = True,
    ) -> RegistryContext:
        """Open the registry; ``serving`` for a long-lived server process (on SQLite, the
        log is checkpointed in the background instead of by commits: by a thread of this
        process, or, without ``checkpoint_thread``, by the server's checkpointer process)."""
        database = settings.database
        background = serving and sqlite_file(database) is not None
        engine = create_engine_for(
            database, wal_autocheckpoint=SAFETY_PAGES if background else 1000
        )
        if serving:
            watch_pool(engine)  # the connection gauges of the metrics
        if run_migrations:
            migrate(engine)
        sessions = session_factory(engine)
        # The client systems come from the database (seeded from config.toml when migrating).
        directory, warnings = open_directory(
            sessions, settings.systems.values(), seed=run_migrations
        )
        for warning in warnings:
            log.warning("%s", warning)
        settings = dataclasses.replace(settings, systems=directory)
        in_force = _read_in_force(sessions, settings)
        matcher = in_force.build()
        rederived = None
        if run_migrations:
            rederived = bring_up_to_date(sessions, matcher)
            if rederived is not None:
                in_force = _read_in_force(sessions, settings)  # (the layout it recorded)
                matcher = in_force.build()
        counts = _load_counts(sessions, matcher)
        checkpointer = WalCheckpointer(engine) if background and checkpoint_thread else None
        context = cls(
            settings,
            engine,
            sessions,
            matcher,
            counts,
            checkpointer,
            in_force=in_force,
            watch_rules=serving,
            rederived=rederived,
        )
        if serving:
            context.systems_watcher = SystemsWatcher(sessions, directory, context._systems_changed)
        return context

    def _systems_changed(self, systems: SystemDirectory) -> None:
        """A system came or changed: its record ids are never compared from now on."""
        self.matcher.extractor.record_id_systems = frozenset(self.settings.record_id_systems)

    def start(self) -> None:
        """Start background work (the checkpointer, the systems watcher, following the rules
        in force), when there is any."""
        if self.checkpointer is not None:
            self.checkpointer.start()
        if self.systems_watcher is not None:
            self.systems_watcher.start()
        if self.watch_rules and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="clientregistry-rules", daemon=True
            )
            self._watcher.start()

    def close(self) -> None:
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.systems_watcher is not None:
            self.systems_watcher.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()

    @property
    def generation(self) -> int:
        return 0 if self.in_force is None else self.in_force.generation

    def refresh_rules(self, generation: int | None = None) -> bool:
        """Rebuild the matcher (and term counts) when the rules in force changed since it
        was built (``generation``: what the caller read from the database already); whether
        it did."""
        if generation is None:
            generation = _generation(self.sessions)
        if generation == self.generation:
            return False
        with self._reload_lock:
            in_force = _read_in_force(self.sessions, self.settings)
            if in_force.generation == self.generation:
                return False
            matcher, counts = _build(self.sessions, in_force)
            # (A request between these lines sees the new counts with the old matcher: their
            # slots follow one layout, so each means what it meant.)
            self.term_counts = counts
            self.matcher = matcher
            self.in_force = in_force
        log.info(
            "decision rules: %s%s (generation %d)",
            in_force.active.source,
            "" if in_force.pending is None else f", next {in_force.pending.source}",
            in_force.generation,
        )
        return True

    def _watch(self) -> None:
        while not self._stop_watching.wait(RULES_POLL_SECONDS):
            try:
                self.refresh_rules()
            except (ClientRegistryError, StoreError) as error:
                log.warning("could not follow the decision rules in force: %s", error)


def _generation(sessions: sessionmaker[Session]) -> int:
    with translate_errors(), sessions() as session:
        found = session.scalar(select(RulesState.generation).where(RulesState.id == STATE_ID))
    return 0 if found is None else int(found)


def _read_in_force(sessions: sessionmaker[Session], settings: Settings) -> InForce:
    try:
        with translate_errors(), sessions() as session:
            return read_in_force(session, settings)
    except StoreError:  # a database without the rules tables (not migrated): the configuration
        return InForce(0, configuration_spec(settings))


def _build(sessions: sessionmaker[Session], in_force: InForce) -> tuple[Matcher, TermCounts]:
    matcher = in_force.build()
    return matcher, _load_counts(sessions, matcher)


def _load_counts(sessions: sessionmaker[Session], matcher: Matcher) -> TermCounts:
    counts = TermCounts(matcher.extractor)
    with sessions() as session:
        load_term_counts(session, counts)
    return counts
