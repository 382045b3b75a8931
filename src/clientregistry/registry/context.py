"""What the use cases share in one process: settings, database, matcher, term counts."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import default_rules, load_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.metrics import watch_pool
from clientregistry.registry.systems import SystemDirectory, SystemsWatcher, open_directory
from clientregistry.settings import Settings
from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import create_engine_for, migrate, session_factory, sqlite_file
from clientregistry.store.term_counts import load_term_counts

log = logging.getLogger(__name__)


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
        rules = default_rules() if settings.rules_path is None else load_rules(settings.rules_path)
        matcher = Matcher(
            rules,
            record_id_systems=settings.record_id_systems,
            candidate_limit=settings.candidate_limit,
        )
        counts = TermCounts(matcher.extractor)
        with sessions() as session:
            load_term_counts(session, counts)
        checkpointer = WalCheckpointer(engine) if background and checkpoint_thread else None
        context = cls(settings, engine, sessions, matcher, counts, checkpointer)
        if serving:
            context.systems_watcher = SystemsWatcher(sessions, directory, context._systems_changed)
        return context

    def _systems_changed(self, systems: SystemDirectory) -> None:
        """A system came or changed: its record ids are never compared from now on."""
        self.matcher.extractor.record_id_systems = frozenset(self.settings.record_id_systems)

    def start(self) -> None:
        """Start background work (the checkpointer, the systems watcher), when there is any."""
        if self.checkpointer is not None:
            self.checkpointer.start()
        if self.systems_watcher is not None:
            self.systems_watcher.start()

    def close(self) -> None:
        if self.systems_watcher is not None:
            self.systems_watcher.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
