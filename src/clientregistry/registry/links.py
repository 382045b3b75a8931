"""Changing links by hand: break, revert a break, join, resolve a review item, confirm an
automatic link, undo.

Every action runs through a :class:`LinkEditor`, which makes the changes in the caller's
session (one transaction) and writes down what it changed — each record's golden record,
``human_adjudicated`` flag and match status before and after, the broken matches it added
or removed, the review items it resolved, reopened or created, the golden records it made —
as a :class:`ChangeLog`. The log goes into the audit event of the action
(``detail["changes"]``), and :func:`revert_event` undoes an action from it (itself an action
with its own log, so a revert can be reverted too).

Decisions made by a person stick, in two ways:

* "not the same person" is a :class:`~clientregistry.store.models.BrokenMatch` (break,
  resolution ``not-a-match``): matching drops the pair, and never puts a record in a golden
  record holding one it is broken from, whatever their data become;
* "these belong together" / "this one stays here" sets ``human_adjudicated`` (join, and the
  resolutions ``keep``, ``move``, ``new``): :mod:`clientregistry.registry.submit` keeps such
  a record's golden record when it is updated, and puts a disagreeing automatic result in the
  review queue as a conflict. A join (or ``move``) confirms the whole golden record, so its
  members are marked too: an update of any of them cannot pull the group apart.

A break leaves the detached record to automatic matching (except with the records it is
broken from); reverting a break (:func:`unbreak`) forgets the broken matches and matches the
record again.

Concurrency: an action first locks the blocking keys of the records it touches (PostgreSQL
advisory locks, the same ones submissions take; on SQLite the write transaction serialises),
so a submission of the same people waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.registry.actor import Refused
from clientregistry.registry.actor import record_action as record_action  # where auth finds it
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.submit import broken_with, find_matches
from clientregistry.store.enums import (
    AgentKind,
    AuditAction,
    IssueKind,
    IssueStatus,
    LinkKind,
    MatchStatus,
)
from clientregistry.store.locks import lock_blocking_keys
from clientregistry.store.models import (
    AuditEvent,
    BrokenMatch,
    GoldenRecord,
    Link,
    MatchIssue,
    SourceRecord,
)

_T = TypeVar("_T")
ActionName = Literal["break", "unbreak", "join", "resolve", "confirm", "merge", "revert"]

REVERTIBLE = frozenset({"break", "unbreak", "join", "resolve", "confirm", "merge", "revert"})
"""Audit ``event_type`` values whose ``detail["changes"]`` :func:`revert_event` can undo."""


class LinkError(Refused):
    """An action that cannot be done: ``status`` 404 (no such thing), 409 (state forbids it)
    or 400 (a bad request)."""


class Resolution(StrEnum):
    """How a reviewer settles a review item."""

    KEEP = "keep"
    """The record stays in its golden record (a person's decision: it sticks)."""
    MOVE = "move"
    """The record moves to another golden record (by default the other record's)."""
    NEW = "new"
    """The record moves to a golden record of its own."""
    NOT_A_MATCH = "not-a-match"
    """The pair is not the same person (a broken match); the record leaves the other's
    golden record if it shares it."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RecordChange:
    """One record's state before and after an action."""

    id: str
    golden_before: str | None
    adjudicated_before: bool
    status_before: str
    golden_after: str | None = None
    adjudicated_after: bool = False
    status_after: str = MatchStatus.NONE.value
    replaced_by_before: str | None = None
    """The record that subsumed it (a merge), before and after."""
    replaced_by_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "golden_before": self.golden_before,
            "golden_after": self.golden_after,
            "adjudicated_before": self.adjudicated_before,
            "adjudicated_after": self.adjudicated_after,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "replaced_by_before": self.replaced_by_before,
            "replaced_by_after": self.replaced_by_after,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordChange:
        return cls(
            id=str(data["id"]),
            golden_before=data.get("golden_before"),
            adjudicated_before=bool(data.get("adjudicated_before")),
            status_before=str(data.get("status_before", MatchStatus.NONE.value)),
            golden_after=data.get("golden_after"),
            adjudicated_after=bool(data.get("adjudicated_after")),
            status_after=str(data.get("status_after", MatchStatus.NONE.value)),
            replaced_by_before=data.get("replaced_by_before"),
            replaced_by_after=data.get("replaced_by_after"),
        )


@dataclass
class ChangeLog:
    """Everything one action changed, enough to undo it."""

    records: list[RecordChange] = field(default_factory=list)
    broken_added: list[tuple[str, str]] = field(default_factory=list)
    broken_removed: list[tuple[str, str]] = field(default_factory=list)
    issues_resolved: list[int] = field(default_factory=list)
    issues_reopened: list[int] = field(default_factory=list)
    issues_created: list[int] = field(default_factory=list)
    goldens_created: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": [r.to_json() for r in self.records],
            "broken_added": [list(p) for p in self.broken_added],
            "broken_removed": [list(p) for p in self.broken_removed],
            "issues_resolved": list(self.issues_resolved),
            "issues_reopened": list(self.issues_reopened),
            "issues_created": list(self.issues_created),
            "goldens_created": list(self.goldens_created),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeLog:
        def pairs(key: str) -> list[tuple[str, str]]:
            return [(str(a), str(b)) for a, b in data.get(key, [])]

        return cls(
            records=[RecordChange.from_json(r) for r in data.get("records", [])],
            broken_added=pairs("broken_added"),
            broken_removed=pairs("broken_removed"),
            issues_resolved=[int(i) for i in data.get("issues_resolved", [])],
            issues_reopened=[int(i) for i in data.get("issues_reopened", [])],
            issues_created=[int(i) for i in data.get("issues_created", [])],
            goldens_created=[str(g) for g in data.get("goldens_created", [])],
        )


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What an action did: the record it was about, its golden record after, the log."""

    action: ActionName
    record_id: str | None
    golden_id: str | None
    changes: ChangeLog
    detail: dict[str, Any]


class LinkEditor:
    """Makes link changes in one session and keeps the :class:`ChangeLog`."""

    def __init__(
        self, session: Session, context: RegistryContext, actor: str, now: datetime | None = None
    ) -> None:
        self.session = session
        self.context = context
        self.actor = actor
        self.now = now or _now()
        self.log = ChangeLog()
        self._changes: dict[str, RecordChange] = {}

    # -------------------------------------------------------------- reading

    def record(self, record_id: str) -> SourceRecord:
        record = self.session.get(SourceRecord, record_id)
        if record is None:
            raise LinkError(404, f"no source record Patient/{record_id}", code="not-found")
        return record

    def issue(self, issue_id: int) -> MatchIssue:
        issue = self.session.get(MatchIssue, issue_id)
        if issue is None:
            raise LinkError(404, f"no review item {issue_id}", code="not-found")
        return issue

    def members(self, golden_id: str | None, *, besides: str | None = None) -> list[str]:
        """Ids of the source records of a golden record (without ``besides``)."""
        if golden_id is None:
            return []
        query = select(SourceRecord.id).where(SourceRecord.golden_id == golden_id)
        if besides is not None:
            query = query.where(SourceRecord.id != besides)
        return list(self.session.scalars(query.order_by(SourceRecord.id)))

    def lock(self, records: Iterable[SourceRecord]) -> None:
        """Serialise with submissions of these people (their blocking keys)."""
        keys: list[str] = []
        for record in records:
            keys.extend(self.context.matcher.blocker.keys(record.features))
        lock_blocking_keys(self.session, keys)

    # -------------------------------------------------------------- changing

    def _track(self, record: SourceRecord) -> RecordChange:
        change = self._changes.get(record.id)
        if change is None:
            change = RecordChange(
                record.id,
                record.golden_id,
                bool(record.human_adjudicated),
                MatchStatus(record.match_status).value,
                replaced_by_before=record.replaced_by,
            )
            self._changes[record.id] = change
            self.log.records.append(change)
        return change

    def _touch(self, golden: GoldenRecord) -> None:
        golden.version += 1
        golden.last_updated = self.now

    def new_golden(self) -> GoldenRecord:
        golden = GoldenRecord(version=1, last_updated=self.now, active=True)
        self.session.add(golden)
        self.session.flush()
        self.log.goldens_created.append(golden.id)
        return golden

    def move(
        self,
        record: SourceRecord,
        golden_id: str | None,
        *,
        adjudicated: bool,
        kind: LinkKind = LinkKind.MANUAL,
        score: float | None = None,
        rule_set: str | None = None,
    ) -> str:
        """Put ``record`` in ``golden_id`` (a new golden record for None) and remember who
        decided. An emptied golden record is retired (``replaced_by`` the new one); a
        retired target is brought back (undoing a retirement). Open review items between
        the record and its new companions are resolved."""
        self._track(record)
        old = record.golden_id
        if golden_id is None:
            target = self.new_golden()
        else:
            found = self.session.get(GoldenRecord, golden_id)
            if found is None:
                raise LinkError(404, f"no golden record Patient/{golden_id}", code="not-found")
            target = found
            if target.id != old:
                self._touch(target)
            if not target.active:
                target.active = True
                target.replaced_by = None
        record.golden_id = target.id
        record.human_adjudicated = adjudicated
        self.session.add(
            Link(
                source_record_id=record.id,
                golden_id=target.id,
                kind=kind,
                score=score,
                rule_set=rule_set,
                created_at=self.now,
            )
        )
        self.session.flush()
        if old is not None and old != target.id:
            previous = self.session.get(GoldenRecord, old)
            if previous is not None:
                self._touch(previous)
                if not self.members(old):
                    previous.active = False
                    previous.replaced_by = target.id
        self.resolve_between(record.id, self.members(target.id, besides=record.id))
        return target.id

    def set_adjudicated(self, record: SourceRecord, adjudicated: bool) -> None:
        self._track(record)
        record.human_adjudicated = adjudicated

    def set_replaced_by(self, record: SourceRecord, survivor: str | None) -> None:
        """Mark ``record`` as subsumed by the source record ``survivor`` (None: not)."""
        self._track(record)
        record.replaced_by = survivor

    # The log keeps net effects: undoing, in the same action, what the action did earlier
    # takes the entry out instead of adding its opposite.

    def add_broken(self, one: str, other: str) -> bool:
        """Remember that two records are not the same person; False if already known."""
        pair = BrokenMatch.pair(one, other)
        key = (pair.record_a, pair.record_b)
        if self.session.get(BrokenMatch, key) is not None:
            return False
        pair.created_at = self.now
        self.session.add(pair)
        self.session.flush()
        _note(key, self.log.broken_added, self.log.broken_removed)
        return True

    def remove_broken(self, one: str, other: str) -> bool:
        low, high = sorted((one, other))
        row = self.session.get(BrokenMatch, (low, high))
        if row is None:
            return False
        self.session.delete(row)
        self.session.flush()
        _note((low, high), self.log.broken_removed, self.log.broken_added)
        return True

    def resolve(self, issue: MatchIssue) -> None:
        if issue.status is IssueStatus.RESOLVED:
            return
        issue.status = IssueStatus.RESOLVED
        issue.resolved_at = self.now
        issue.resolved_by = self.actor
        if issue.id in self.log.issues_created:
            self.log.issues_created.remove(issue.id)  # made and settled here: nothing to undo
        else:
            _note(issue.id, self.log.issues_resolved, self.log.issues_reopened)

    def reopen(self, issue: MatchIssue) -> None:
        if issue.status is IssueStatus.OPEN:
            return
        issue.status = IssueStatus.OPEN
        issue.resolved_at = None
        issue.resolved_by = None
        _note(issue.id, self.log.issues_reopened, self.log.issues_resolved)

    def set_status(self, record: SourceRecord, status: MatchStatus) -> None:
        self._track(record)
        record.match_status = status

    def open_issues(self, record_id: str, others: Sequence[str] | None = None) -> list[MatchIssue]:
        """Open review items involving ``record_id`` (with one of ``others``, if given)."""
        mine = (MatchIssue.record_id == record_id) | (MatchIssue.other_record_id == record_id)
        query = select(MatchIssue).where(MatchIssue.status == IssueStatus.OPEN, mine)
        if others is not None:
            if not others:
                return []
            query = query.where(
                MatchIssue.record_id.in_(others) | MatchIssue.other_record_id.in_(others)
            )
        return list(self.session.scalars(query.order_by(MatchIssue.id)))

    def resolve_between(self, record_id: str, others: Sequence[str]) -> None:
        for issue in self.open_issues(record_id, others):
            self.resolve(issue)

    def refresh_status(self, record: SourceRecord) -> None:
        """The match status that describes the record now (its open items, its company)."""
        self._track(record)
        kinds = set(
            self.session.scalars(
                select(MatchIssue.kind).where(
                    MatchIssue.status == IssueStatus.OPEN, MatchIssue.record_id == record.id
                )
            )
        )
        if IssueKind.CONFLICT in kinds:
            record.match_status = MatchStatus.CONFLICT
        elif IssueKind.POTENTIAL in kinds:
            record.match_status = MatchStatus.POTENTIAL
        elif self.members(record.golden_id, besides=record.id):
            record.match_status = MatchStatus.AUTO
        else:
            record.match_status = MatchStatus.NONE

    def rematch(self, record: SourceRecord) -> str:
        """Match ``record`` again as a submission would (its stored data, no new version):
        move it where the engine puts it and queue what needs review."""
        session = self.session
        matcher = self.context.matcher
        keys = matcher.blocker.keys(record.features)
        old = record.golden_id
        for issue in self.open_issues(record.id):
            self.resolve(issue)
        broken = broken_with(session, record.id)
        # The same candidate search and classification as a submission (one source of truth).
        result = find_matches(session, self.context, record.id, record.features, keys, old, broken)
        best = result.auto[0] if result.auto else None
        rule_set = None if best is None else matcher.rules.rule_sets[best.score.rule_set].name
        score = None if best is None else best.score.score
        if result.golden_id is not None:
            target: str | None = str(result.golden_id)
        elif old is not None and not self.members(old, besides=record.id):
            target = old
        else:
            target = None
        self.move(
            record, target, adjudicated=False, kind=LinkKind.AUTO, score=score, rule_set=rule_set
        )
        queues = ((IssueKind.POTENTIAL, result.potential), (IssueKind.CONFLICT, result.conflicts))
        for kind, items in queues:
            for item in items:
                issue = MatchIssue(
                    record_id=record.id,
                    other_record_id=str(item.record_id),
                    kind=kind,
                    score=item.score.score,
                    created_at=self.now,
                )
                session.add(issue)
                session.flush()
                self.log.issues_created.append(issue.id)
        self.refresh_status(record)
        return str(record.golden_id)

    def finish(self) -> ChangeLog:
        """The log, with every tracked record's state after the action."""
        self.session.flush()
        for change in self.log.records:
            record = self.session.get(SourceRecord, change.id)
            if record is None:
                continue
            change.golden_after = record.golden_id
            change.adjudicated_after = bool(record.human_adjudicated)
            change.status_after = MatchStatus(record.match_status).value
            change.replaced_by_after = record.replaced_by
        return self.log


def _note(item: _T, done: list[_T], opposite: list[_T]) -> None:
    """Log ``item`` in ``done`` unless it cancels an entry of ``opposite``."""
    if item in opposite:
        opposite.remove(item)
    else:
        done.append(item)


# ----------------------------------------------------------------------------- actions


def _companions(editor: LinkEditor, record: SourceRecord) -> list[str]:
    """The other records of the record's golden record; 409 when it has none."""
    others = editor.members(record.golden_id, besides=record.id)
    if not others:
        raise LinkError(
            409,
            f"Patient/{record.id} is the only record of its golden record",
            code="only-record",
            params={"record": record.id},
        )
    return others


def break_record(editor: LinkEditor, record_id: str) -> ActionOutcome:
    """Detach a record from its golden record into a new one, remembering it as not the same
    person as every other member of the old one."""
    record = editor.record(record_id)
    old = record.golden_id
    others = _companions(editor, record)
    editor.lock([record, *(editor.record(o) for o in others)])
    for other in others:
        editor.add_broken(record.id, other)
    golden = editor.move(record, None, adjudicated=False)
    editor.refresh_status(record)
    detail = {"golden_before": old, "golden_after": golden, "broken_with": others}
    return ActionOutcome("break", record.id, golden, editor.finish(), detail)


def unbreak(
    editor: LinkEditor, record_id: str, others: Sequence[str] | None = None
) -> ActionOutcome:
    """Forget that ``record_id`` is not the same person as ``others`` (default: every
    record it was broken from) and match it again automatically."""
    record = editor.record(record_id)
    known = sorted(broken_with(editor.session, record.id))
    chosen = known if not others else list(others)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise LinkError(
            409,
            f"Patient/{record_id} has no broken match with {', '.join(unknown)}",
            code="no-broken-match",
        )
    if not chosen:
        raise LinkError(409, f"Patient/{record_id} has no broken matches", code="no-broken-match")
    editor.lock([record, *(editor.record(o) for o in chosen)])
    old = record.golden_id
    for other in chosen:
        editor.remove_broken(record.id, other)
    golden = editor.rematch(record)
    detail = {"golden_before": old, "golden_after": golden, "unbroken_with": chosen}
    return ActionOutcome("unbreak", record.id, golden, editor.finish(), detail)


def confirm(editor: LinkEditor, records: Iterable[SourceRecord]) -> None:
    """Mark records whose golden record a person confirmed (they stay together)."""
    for record in records:
        if not record.human_adjudicated:
            editor.set_adjudicated(record, True)


def _target_golden(editor: LinkEditor, golden_id: str | None, with_record: str | None) -> str:
    if (golden_id is None) == (with_record is None):
        raise LinkError(400, "give exactly one of golden_id and record_id")
    if with_record is not None:
        other = editor.record(with_record)
        if other.golden_id is None:
            raise LinkError(409, f"Patient/{with_record} has no golden record")
        return other.golden_id
    assert golden_id is not None
    golden = editor.session.get(GoldenRecord, golden_id)
    if golden is None:
        raise LinkError(404, f"no golden record Patient/{golden_id}", code="not-found")
    if not golden.active:
        successor = f" (replaced by Patient/{golden.replaced_by})" if golden.replaced_by else ""
        raise LinkError(
            409, f"golden record Patient/{golden_id} is retired{successor}", code="retired"
        )
    return golden.id


def _refuse_broken(editor: LinkEditor, record_id: str, golden_id: str) -> None:
    broken = broken_with(editor.session, record_id) & set(editor.members(golden_id))
    if broken:
        raise LinkError(
            409,
            f"Patient/{record_id} is marked as not the same person as "
            f"{', '.join('Patient/' + b for b in sorted(broken))}; revert that break first",
            code="broken-match",
            params={"record": record_id, "others": sorted(broken)},
        )


def join(
    editor: LinkEditor, record_id: str, golden_id: str | None, with_record: str | None = None
) -> ActionOutcome:
    """Link a record by hand to a chosen golden record (given, or that of ``with_record``)."""
    record = editor.record(record_id)
    target = _target_golden(editor, golden_id, with_record)
    if target == record.golden_id:
        raise LinkError(
            409,
            f"Patient/{record_id} is already in Patient/{target}",
            code="already-linked",
            params={"record": record_id, "golden": target},
        )
    old = _place_by_hand(editor, record, target)
    detail = {"golden_before": old, "golden_after": target}
    return ActionOutcome("join", record.id, target, editor.finish(), detail)


def _place_by_hand(editor: LinkEditor, record: SourceRecord, target: str) -> str | None:
    """Put ``record`` in the golden record ``target`` as a person's decision that confirms
    the whole golden record (a join, a merge); the record's golden record before."""
    _refuse_broken(editor, record.id, target)
    members = [editor.record(m) for m in editor.members(target, besides=record.id)]
    editor.lock([record, *members])
    old = record.golden_id
    if target != old:
        editor.move(record, target, adjudicated=True)
    else:
        editor.set_adjudicated(record, True)
    confirm(editor, members)
    editor.refresh_status(record)
    return old


def merge(editor: LinkEditor, record_id: str, survivor_id: str) -> ActionOutcome:
    """Record that ``record_id`` is a duplicate subsumed by the source record ``survivor_id``
    (ITI-104 Resolve Duplicate, ``Patient/$merge``): it joins the survivor's golden record
    as a person's decision would (it sticks), and is marked as replaced by the survivor."""
    if record_id == survivor_id:
        raise LinkError(422, f"Patient/{record_id} cannot replace itself")
    record, survivor = editor.record(record_id), editor.record(survivor_id)
    if survivor.golden_id is None:
        raise LinkError(409, f"Patient/{survivor_id} has no golden record")
    if survivor.replaced_by == record.id:
        raise LinkError(409, f"Patient/{survivor_id} is itself replaced by Patient/{record_id}")
    target = survivor.golden_id
    old = _place_by_hand(editor, record, target)
    editor.set_replaced_by(record, survivor.id)
    detail = {"golden_before": old, "golden_after": target, "replaced_by": survivor.id}
    return ActionOutcome("merge", record.id, target, editor.finish(), detail)


def resolve_issue(
    editor: LinkEditor,
    issue_id: int,
    resolution: Resolution,
    *,
    golden_id: str | None = None,
    record_id: str | None = None,
) -> ActionOutcome:
    """Settle a review item: keep, move (to ``golden_id``, default the other record's golden
    record), new golden record, or not a match. ``record_id`` says which of the pair is
    placed (default the item's record). The item leaves the queue."""
    issue = editor.issue(issue_id)
    _still_open(issue)
    pair = (issue.record_id, issue.other_record_id)
    subject_id = record_id or issue.record_id
    if subject_id not in pair:
        raise LinkError(400, f"Patient/{subject_id} is not part of review item {issue_id}")
    other_id = pair[1] if subject_id == pair[0] else pair[0]
    if golden_id is not None and resolution is not Resolution.MOVE:
        raise LinkError(400, "golden_id goes with the 'move' resolution only")
    subject, other = editor.record(subject_id), editor.record(other_id)
    editor.lock([subject, other])
    # Another reviewer may have settled it while this one waited for the locks.
    editor.session.refresh(issue)
    _still_open(issue)
    old = subject.golden_id
    if resolution is Resolution.KEEP:
        editor.set_adjudicated(subject, True)
    elif resolution is Resolution.MOVE:
        target = _target_golden(editor, golden_id, None if golden_id else other_id)
        if target != old:
            _refuse_broken(editor, subject.id, target)
            members = [editor.record(m) for m in editor.members(target)]
            editor.lock(members)
            editor.move(subject, target, adjudicated=True)
            confirm(editor, members)
        else:
            editor.set_adjudicated(subject, True)
    elif resolution is Resolution.NEW:
        editor.move(subject, None, adjudicated=True)
    else:
        editor.add_broken(subject.id, other.id)
        if subject.golden_id == other.golden_id:
            editor.move(subject, None, adjudicated=False)
    editor.resolve(issue)
    editor.resolve_between(subject.id, [other.id])
    editor.refresh_status(subject)
    detail = {
        "issue": issue_id,
        "kind": IssueKind(issue.kind).value,
        "resolution": resolution.value,
        "other": other.id,
        "golden_before": old,
        "golden_after": subject.golden_id,
    }
    return ActionOutcome("resolve", subject.id, subject.golden_id, editor.finish(), detail)


def _still_open(issue: MatchIssue) -> None:
    """409, saying who settled it and when, unless the review item is open."""
    if issue.status is IssueStatus.OPEN:
        return
    by = issue.resolved_by or "someone"
    when = issue.resolved_at.isoformat() if issue.resolved_at else None
    raise LinkError(
        409,
        f"review item {issue.id} is already resolved (by {by}" + (f" at {when})" if when else ")"),
        code="already-resolved",
        params={"issue": issue.id, "by": by, "at": when},
    )


def confirm_record(editor: LinkEditor, record_id: str) -> ActionOutcome:
    """Confirm an automatic link: the record and the other records of its golden record are
    marked as placed by a person (they stay together), and it leaves the queue of automatic
    links to confirm."""
    record = editor.record(record_id)
    others = [editor.record(m) for m in _companions(editor, record)]
    editor.lock([record, *others])
    editor.session.refresh(record)
    if record.human_adjudicated:
        raise LinkError(
            409,
            f"Patient/{record_id} was already confirmed or placed by a person",
            code="already-confirmed",
            params={"record": record_id},
        )
    confirm(editor, [record, *others])
    detail = {"golden": record.golden_id, "members": [o.id for o in others]}
    return ActionOutcome("confirm", record.id, record.golden_id, editor.finish(), detail)


def revert_event(editor: LinkEditor, event_id: int) -> ActionOutcome:
    """Undo a break, unbreak, join, resolution (or revert) from its audit event, provided
    nothing it changed has changed since."""
    event = editor.session.get(AuditEvent, event_id)
    if event is None:
        raise LinkError(404, f"no audit event {event_id}", code="not-found")
    detail = event.detail or {}
    if event.event_type not in REVERTIBLE or "changes" not in detail or event.outcome != 0:
        raise LinkError(
            409,
            f"audit event {event_id} ({event.event_type}) cannot be reverted",
            code="not-revertible",
        )
    log = ChangeLog.from_json(detail["changes"])
    _check_current(editor, log, event_id)
    records = [editor.record(change.id) for change in log.records]
    editor.lock(records)
    for change, record in zip(log.records, records, strict=True):
        if change.golden_before != change.golden_after and change.golden_before is not None:
            editor.move(record, change.golden_before, adjudicated=change.adjudicated_before)
        else:
            editor.set_adjudicated(record, change.adjudicated_before)
        if change.replaced_by_before != change.replaced_by_after:
            editor.set_replaced_by(record, change.replaced_by_before)
    for a, b in log.broken_added:
        editor.remove_broken(a, b)
    for a, b in log.broken_removed:
        editor.add_broken(a, b)
    for issue_id in log.issues_resolved:
        editor.reopen(editor.issue(issue_id))
    for issue_id in [*log.issues_reopened, *log.issues_created]:
        editor.resolve(editor.issue(issue_id))
    for change, record in zip(log.records, records, strict=True):
        editor.set_status(record, MatchStatus(change.status_before))
    first = log.records[0] if log.records else None
    out = {"reverts": event_id, "reverted_action": event.event_type}
    return ActionOutcome(
        "revert",
        first.id if first else None,
        first.golden_before if first else None,
        editor.finish(),
        out,
    )


def _check_current(editor: LinkEditor, log: ChangeLog, event_id: int) -> None:
    """409 unless everything the event changed is still as the event left it."""
    session = editor.session
    problems: list[str] = []
    for change in log.records:
        record = session.get(SourceRecord, change.id)
        if record is None:
            problems.append(f"Patient/{change.id} no longer exists")
        elif record.golden_id != change.golden_after:
            problems.append(f"Patient/{change.id} has moved since")
        elif record.replaced_by != change.replaced_by_after:
            problems.append(f"Patient/{change.id} has been merged or unmerged since")
    for a, b in log.broken_added:
        if session.get(BrokenMatch, (a, b)) is None:
            problems.append(f"the broken match {a} / {b} is gone")
    for a, b in log.broken_removed:
        if session.get(BrokenMatch, (a, b)) is not None:
            problems.append(f"the broken match {a} / {b} is back")
    expected = [(i, IssueStatus.RESOLVED) for i in log.issues_resolved] + [
        (i, IssueStatus.OPEN) for i in [*log.issues_reopened, *log.issues_created]
    ]
    for issue_id, status in expected:
        issue = session.get(MatchIssue, issue_id)
        if issue is None or issue.status is not status:
            problems.append(f"review item {issue_id} has changed since")
    if problems:
        raise LinkError(
            409,
            f"audit event {event_id} cannot be reverted: {'; '.join(problems)}",
            code="changed-since",
            params={"event": event_id, "problems": problems},
        )


# ----------------------------------------------------------------------------- audit


def audit_outcome(
    session: Session,
    outcome: ActionOutcome,
    *,
    agent: str,
    source_address: str | None,
    agent_kind: AgentKind = AgentKind.USER,
) -> AuditEvent:
    """The audit event of a link action, with its change log (what :func:`revert_event`
    reads)."""
    return record_action(
        session,
        agent=agent,
        agent_kind=agent_kind,
        source_address=source_address,
        event_type=outcome.action,
        action=AuditAction.UPDATE,
        entity=f"Patient/{outcome.record_id}" if outcome.record_id else None,
        detail={**outcome.detail, "changes": outcome.changes.to_json()},
    )
