"""The decision rules kept in the database: check a rules file, store it as a version, list
the versions, and which is in force.

A rules file is checked exactly as ``clientregistry rules check`` checks it (the same
messages: :meth:`RulesCheck.messages`) before it is stored. Versions are never changed or
deleted; storing a file already stored gives its version back. A version is put in force by
a re-match (:mod:`clientregistry.registry.rematch`), which matches every record again under
it and switches every process of the registry over while the server keeps serving;
"restore the previous rules" is a re-match to :func:`previous_version`.

The first time rules are put in force, the rules in force until then (the configuration's
file, or the built-in rules) are stored as a version too (``created_by`` ``configuration``),
so that they can be restored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.errors import RuleSetError
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, parse_rules
from clientregistry.registry.actor import Actor, Reading, Refused, audit_in, audit_read, not_found
from clientregistry.registry.context import RegistryContext
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction
from clientregistry.store.models import RulesActivation, RulesState, RulesVersion

MAX_RULES_BYTES = 1 << 20
"""The largest rules file accepted (1 MiB; OpenCR's are a few kilobytes)."""

STATE_ID = 1
"""The one row of :class:`~clientregistry.store.models.RulesState`."""

CONFIGURATION = "configuration"
"""``created_by`` of the version holding the rules of the configuration."""


@dataclass(frozen=True, slots=True)
class RulesCheck:
    """What checking a rules file found."""

    source: str
    problems: tuple[str, ...]
    """Every problem with its place (``rules[0].fields.given.algorithm: unknown …``)."""
    warnings: tuple[str, ...]
    description: tuple[str, ...]
    """When the file is valid: each rule set, then ``blocking keys:`` and the keys."""
    document: Any = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def messages(self) -> list[str]:
        """The lines ``clientregistry rules check`` prints."""
        if not self.ok:
            return [
                f"{self.source}: the decision rules are not valid",
                *(f"  - {problem}" for problem in self.problems),
            ]
        return [
            *(f"warning: {self.source}: {warning}" for warning in self.warnings),
            *self.description,
            f"{self.source}: OK",
        ]


def describe(rules: DecisionRules) -> list[str]:
    """How ``rules`` match and block, as ``rules check`` describes them."""
    lines = [
        f"{rs.name}: {rs.matching_type}, {len(rs.fields)} fields, potential ≥ "
        f"{rs.potential_threshold:g}, auto ≥ {rs.auto_threshold:g}, highest possible score "
        f"{rs.max_score():.2f}"
        for rs in rules.rule_sets
    ]
    lines.append("blocking keys:")
    lines += [f"  {line}" for line in Matcher(rules).blocker.describe()]
    return lines


def check_rules(content: bytes | str, source: str) -> RulesCheck:
    """Check a rules file's content (JSON, OpenCR's format and this registry's extensions)."""
    if len(content) > MAX_RULES_BYTES:
        return RulesCheck(source, (f"larger than {MAX_RULES_BYTES} bytes",), (), ())
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as error:
        return RulesCheck(source, (f"not UTF-8 text (byte {error.start})",), (), ())
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        return RulesCheck(source, (f"{where}: not JSON: {error.msg}",), (), ())
    try:
        rules = parse_rules(document, source=source)
    except RuleSetError as error:
        return RulesCheck(source, tuple(str(p) for p in error.problems), (), ())
    return RulesCheck(source, (), tuple(rules.warnings), tuple(describe(rules)), document)


@dataclass(frozen=True, slots=True)
class RulesVersionView:
    """A stored version of the rules."""

    id: int
    created_at: datetime
    created_by: str
    source: str
    note: str | None
    sha256: str
    active: bool
    """In force now."""
    pending: bool
    """Being put in force by a re-match."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "source": self.source,
            "note": self.note,
            "sha256": self.sha256,
            "active": self.active,
            "pending": self.pending,
        }


def _view(version: RulesVersion, state: RulesState | None) -> RulesVersionView:
    return RulesVersionView(
        id=version.id,
        created_at=version.created_at,
        created_by=version.created_by,
        source=version.source,
        note=version.note,
        sha256=version.sha256,
        active=state is not None and state.active_version == version.id,
        pending=state is not None and state.pending_version == version.id,
    )


def rules_state(session: Session) -> RulesState | None:
    """The rules in force (None until rules were first put in force from the database)."""
    return session.get(RulesState, STATE_ID)


def _stored(
    session: Session, content: str, source: str, created_by: str, note: str | None
) -> RulesVersion:
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    found = session.scalars(
        select(RulesVersion).where(RulesVersion.sha256 == digest).order_by(RulesVersion.id)
    ).first()
    if found is not None:
        return found
    version = RulesVersion(
        created_by=created_by, source=source[:255], note=note, content=content, sha256=digest
    )
    session.add(version)
    session.flush()
    return version


def store_rules(
    context: RegistryContext,
    actor: Actor,
    content: bytes | str,
    source: str,
    note: str | None = None,
) -> RulesVersionView:
    """Check a rules file and keep it as a version (not in force yet); a :class:`Refused`
    (400) listing every problem when it is not valid. The same content stored before gives
    that version back."""
    checked = check_rules(content, source)
    if not checked.ok:
        raise Refused(
            400,
            "; ".join(checked.messages()),
            code="rules-invalid",
            params={"problems": list(checked.problems)},
        )
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    with transaction(context.sessions) as session:
        version = _stored(session, text, source, actor.username, note)
        audit_in(
            session,
            actor,
            Reading(
                "rules-store",
                f"RulesVersion/{version.id}",
                {"source": source, "sha256": version.sha256},
                AuditAction.CREATE,
            ),
        )
        return _view(version, rules_state(session))


def list_versions(context: RegistryContext, actor: Actor) -> list[RulesVersionView]:
    """Every stored version, newest first."""
    with transaction(context.sessions, write=False) as session:
        state = rules_state(session)
        versions = session.scalars(select(RulesVersion).order_by(RulesVersion.id.desc())).all()
        views = [_view(version, state) for version in versions]
    audit_read(context, actor, Reading("rules-read"))
    return views


def get_version(
    context: RegistryContext, actor: Actor, version_id: int
) -> tuple[RulesVersionView, str]:
    """A stored version and its content."""
    with transaction(context.sessions, write=False) as session:
        version = session.get(RulesVersion, version_id)
        if version is None:
            raise not_found(f"no rules version {version_id}", version=version_id)
        found = _view(version, rules_state(session)), version.content
    audit_read(context, actor, Reading("rules-read", f"RulesVersion/{version_id}"))
    return found


def version_content(session: Session, version_id: int) -> tuple[Any, str]:
    """A version's rules as JSON, and a name for them (``rules version N (file)``)."""
    version = session.get(RulesVersion, version_id)
    if version is None:
        raise not_found(f"no rules version {version_id}", version=version_id)
    return json.loads(version.content), f"rules version {version.id} ({version.source})"


def previous_version(context: RegistryContext) -> int | None:
    """The version in force before the one in force now (what "restore" puts back)."""
    with transaction(context.sessions, write=False) as session:
        state = rules_state(session)
        if state is None or state.active_version is None:
            return None
        history = session.scalars(
            select(RulesActivation.previous_version).order_by(RulesActivation.id.desc())
        )
        return next((v for v in history if v is not None and v != state.active_version), None)


def configuration_version(session: Session, context: RegistryContext) -> RulesVersion:
    """The rules in force until rules were first put in force from the database, as a
    version (stored on first use)."""
    spec = context.spec
    if spec is None:
        raise Refused(500, "the registry's rules are not known")
    content = json.dumps(spec.document, indent=2, ensure_ascii=False)
    return _stored(session, content, spec.source, CONFIGURATION, "the rules of the configuration")
