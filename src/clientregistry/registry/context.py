"""What the use cases share in one process: settings, database, matcher, term counts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import default_rules, load_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.settings import Settings
from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import create_engine_for, migrate, session_factory, sqlite_file
from clientregistry.store.term_counts import load_term_counts


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
        if run_migrations:
            migrate(engine)
        rules = default_rules() if settings.rules_path is None else load_rules(settings.rules_path)
        matcher = Matcher(
            rules,
            record_id_systems=settings.record_id_systems,
            candidate_limit=settings.candidate_limit,
        )
        sessions = session_factory(engine)
        counts = TermCounts(matcher.extractor)
        with sessions() as session:
            load_term_counts(session, counts)
        checkpointer = WalCheckpointer(engine) if background and checkpoint_thread else None
        return cls(settings, engine, sessions, matcher, counts, checkpointer)

    def start(self) -> None:
        """Start background work (the checkpointer), when there is any."""
        if self.checkpointer is not None:
            self.checkpointer.start()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
