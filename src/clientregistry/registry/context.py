"""What the use cases share in one process: settings, database, matcher, term counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.errors import Problem, RuleSetError
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, parse_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.settings import Settings
from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import create_engine_for, migrate, session_factory, sqlite_file
from clientregistry.store.term_counts import load_term_counts


@dataclass(frozen=True, slots=True)
class MatcherSpec:
    """Everything that makes a :class:`Matcher`, as plain values: another process (an
    import's reader) builds the same matcher from it (:meth:`build`)."""

    document: Any
    """The decision rules as JSON."""
    source: str
    record_id_systems: tuple[str, ...]
    candidate_limit: int

    def rules(self) -> DecisionRules:
        return parse_rules(self.document, source=self.source)

    def build(self) -> Matcher:
        return Matcher(
            self.rules(),
            record_id_systems=self.record_id_systems,
            candidate_limit=self.candidate_limit,
        )


def rules_document(path: Path | None) -> tuple[Any, str]:
    """The decision rules of the configuration as JSON and their source: ``path``, or the
    built-in rules; a :class:`RuleSetError` when the file cannot be read."""
    if path is None:
        package = resources.files("clientregistry.matching")
        with package.joinpath("default_rules.json").open() as fh:
            return json.load(fh), "default rules"
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RuleSetError(source, [Problem("", f"cannot read file: {error.strerror}")]) from None
    try:
        return json.loads(text), source
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise RuleSetError(source, [Problem(where, f"not JSON: {error.msg}")]) from None


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
    spec: MatcherSpec | None = None
    """What :attr:`matcher` was built from."""

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
        document, source = rules_document(settings.rules_path)
        spec = MatcherSpec(document, source, settings.record_id_systems, settings.candidate_limit)
        matcher = spec.build()
        sessions = session_factory(engine)
        counts = TermCounts(matcher.extractor)
        with sessions() as session:
            load_term_counts(session, counts)
        checkpointer = WalCheckpointer(engine) if background and checkpoint_thread else None
        return cls(settings, engine, sessions, matcher, counts, checkpointer, spec)

    def start(self) -> None:
        """Start background work (the checkpointer), when there is any."""
        if self.checkpointer is not None:
            self.checkpointer.start()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
