"""Which decision rules are in force, and the matcher every process builds from them.

The rules in force are the configuration's (``[matching] rules``, or the built-in rules)
until a re-match puts a stored version in force (:mod:`clientregistry.registry.rules_store`,
:class:`~clientregistry.store.models.RulesState`). Every registry process holds an
:class:`InForce` and rebuilds its matcher when the state's ``generation`` moves on
(:meth:`~clientregistry.registry.context.RegistryContext.refresh_rules`).

While a re-match prepares a change (a *pending* version), the matcher matches under the
rules in force but extracts features in the layout both versions share and gives records the
blocking keys of both (:class:`UnionBlocker`), so that a record stored meanwhile is found by
either; once the change is switched on, the new rules match in the same layout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from clientregistry.errors import Problem, RuleSetError
from clientregistry.matching.blocking import Blocker
from clientregistry.matching.features import Features, SlotKey
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, parse_rules
from clientregistry.settings import Settings
from clientregistry.store.models import RulesState, RulesVersion

STATE_ID = 1
"""The one row of :class:`~clientregistry.store.models.RulesState`."""


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


def layout_from_json(data: Any) -> tuple[SlotKey, ...]:
    """A stored layout (a list of slot keys as lists)."""
    if not isinstance(data, list):
        return ()
    return tuple(tuple(item) for item in data)


def layout_to_json(layout: tuple[SlotKey, ...] | list[SlotKey]) -> list[list[Any]]:
    return [list(key) for key in layout]


@dataclass(frozen=True, slots=True)
class MatcherSpec:
    """Everything that makes a :class:`Matcher`, as plain values: another process (an
    import's reader) builds the same matcher from it (:meth:`build`)."""

    document: Any
    """The decision rules as JSON."""
    source: str
    record_id_systems: tuple[str, ...]
    candidate_limit: int
    layout: tuple[SlotKey, ...] = ()
    version: int | None = None
    """The stored version these rules are (None: the configuration's)."""

    def rules(self) -> DecisionRules:
        return parse_rules(self.document, source=self.source)

    def build(self) -> Matcher:
        return Matcher(
            self.rules(),
            record_id_systems=self.record_id_systems,
            candidate_limit=self.candidate_limit,
            layout=self.layout,
        )


class UnionBlocker:
    """The blocking keys of two matchers together (a record of a registry whose rules are
    changing is indexed under both)."""

    def __init__(self, first: Blocker, second: Blocker) -> None:
        self.first = first
        self.second = second

    def keys(self, features: Features) -> list[str]:
        return list(dict.fromkeys([*self.first.keys(features), *self.second.keys(features)]))

    def describe(self) -> list[str]:
        return [*self.first.describe(), *(f"(next) {line}" for line in self.second.describe())]

    def signature(self) -> str:
        """The digest of both key plans (records hold the keys of both)."""
        text = f"{self.first.signature()}+{self.second.signature()}"
        return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class InForce:
    """The rules a registry matches under (``active``), and those a re-match is putting in
    force (``pending``), at ``generation``."""

    generation: int
    active: MatcherSpec
    pending: MatcherSpec | None = None

    def build(self) -> Matcher:
        """The matcher of this state (see the module notes on a pending change)."""
        matcher = self.active.build()
        if self.pending is not None:
            next_matcher = self.pending.build()
            matcher.blocker = UnionBlocker(matcher.blocker, next_matcher.blocker)  # type: ignore[assignment]
        return matcher


def configuration_spec(settings: Settings) -> MatcherSpec:
    """The rules of the configuration (before any stored version is put in force)."""
    document, source = rules_document(settings.rules_path)
    return MatcherSpec(document, source, settings.record_id_systems, settings.candidate_limit)


def version_spec(
    session: Session, settings: Settings, version_id: int, layout: tuple[SlotKey, ...]
) -> MatcherSpec:
    version = session.get(RulesVersion, version_id)
    if version is None:
        raise RuleSetError(f"rules version {version_id}", [Problem("", "no such version")])
    return MatcherSpec(
        json.loads(version.content),
        f"rules version {version.id} ({version.source})",
        settings.record_id_systems,
        settings.candidate_limit,
        layout,
        version.id,
    )


def read_in_force(session: Session, settings: Settings) -> InForce:
    """The rules in force as the database says (the configuration's when it says none)."""
    state = session.get(RulesState, STATE_ID)
    if state is None:
        return InForce(0, configuration_spec(settings))
    layout = layout_from_json(state.layout)
    if state.active_version is None:
        active = configuration_spec(settings)
        active = MatcherSpec(
            active.document, active.source, active.record_id_systems, active.candidate_limit, layout
        )
    else:
        active = version_spec(session, settings, state.active_version, layout)
    pending = None
    if state.pending_version is not None:
        pending = version_spec(session, settings, state.pending_version, layout)
    return InForce(state.generation, active, pending)


def generation_of(session: Session) -> int:
    """The state's generation (0 before any)."""
    state = session.get(RulesState, STATE_ID)
    return 0 if state is None else state.generation
