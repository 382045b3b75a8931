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
