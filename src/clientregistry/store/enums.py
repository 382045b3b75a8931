"""The closed vocabularies the store keeps as strings (:func:`.columns.string_enum`)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class MatchStatus(StrEnum):
    """How a source record's last matching ended (OpenCR's tags)."""

    AUTO = "auto"
    """Linked by an auto match (``autoMatches``)."""
    POTENTIAL = "potential"
    """Has potential matches awaiting review (``potentialMatches``)."""
    CONFLICT = "conflict"
    """Auto matches to more than one golden record (``conflictMatches``)."""
    NONE = "none"
    """No match: the record has a golden record of its own."""


class LinkKind(StrEnum):
    """Who decided a link."""

    AUTO = "auto"
    MANUAL = "manual"


class IssueKind(StrEnum):
    """Why a pair of records is in the review queue."""

    POTENTIAL = "potential"
    CONFLICT = "conflict"


class IssueStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class AuditAction(StrEnum):
    """FHIR AuditEvent.action."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(IntEnum):
    """FHIR AuditEvent.outcome."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class AgentKind(StrEnum):
    """Who acted: a point-of-service system (certificate) or a person (login)."""

    SYSTEM = "system"
    USER = "user"


class Role(StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"


class JobKind(StrEnum):
    """What a bulk job does (:class:`~clientregistry.store.models.BulkJob`)."""

    IMPORT = "import"
    REMATCH = "rematch"
    EXPORT = "export"


class JobState(StrEnum):
    """Where a bulk job is. ``queued`` and ``running`` are unfinished (a server's job runner
    takes them up, also after a restart); ``interrupted`` is a command-line job that stopped
    before its end (running the command again continues it)."""

    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobOrigin(StrEnum):
    """Who runs a bulk job: the command that created it, or the server's job runner."""

    CLI = "cli"
    SERVER = "server"


class RowOutcome(StrEnum):
    """What became of one input row of an import (its report line)."""

    NEW_PERSON = "new-person"
    """Stored; no auto match: a golden record of its own."""
    LINKED = "linked"
    """Stored and linked to an existing person by an auto match."""
    POTENTIAL = "potential"
    """Stored with potential matches for a person to review."""
    CONFLICT = "conflict"
    """Stored; it auto-matched records of several persons (for review)."""
    ERROR = "error"
    """Not stored: the row is invalid (the message says why)."""
    SKIPPED = "skipped"
    """Not a record to store (a golden record of an export)."""
