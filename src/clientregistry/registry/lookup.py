"""Looking people up: what the three lookups share, who may look and the audit trail.

Three use cases over an open :class:`RegistryContext`, each in the caller's session and
transaction (the API audits them; see :func:`record_lookup`):

- identifier cross-references, PIXm ``GET Patient/$ihe-pix`` (ITI-83):
  :mod:`clientregistry.registry.pix`;
- matching, ``POST Patient/$match`` (FHIR R4, PDQm ITI-119):
  :mod:`clientregistry.registry.person_match`;
- search, ``GET|POST Patient`` (PDQm ITI-78): :mod:`clientregistry.registry.search_query`
  (the parameters and what they match), :mod:`clientregistry.registry.search_prefilter` (the
  SQL that narrows the candidates) and :mod:`clientregistry.registry.search` (a page of
  results).

They read source records and people through :mod:`clientregistry.registry.people` and the
``search_token`` index through :mod:`clientregistry.registry.token_index`. This module holds
the permissions a caller needs (:func:`require_permission`) and :func:`record_lookup`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from clientregistry.fhir.errors import forbidden
from clientregistry.registry import audit
from clientregistry.registry.context import RegistryContext
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction, AuditOutcome

READ_IDENTIFIERS: Final = "read-identifiers"
READ_DEMOGRAPHICS: Final = "read-demographics"


def require_permission(system: ClientSystemConfig, *allowed: str) -> None:
    """403 unless ``system`` holds one of ``allowed``."""
    if not any(p in system.permissions for p in allowed):
        raise forbidden(f"{system.name!r} may not {allowed[0].replace('-', ' ')}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked, for the audit trail."""

    name: str
    address: str | None = None


def record_lookup(
    context: RegistryContext,
    caller: Caller,
    *,
    action: AuditAction,
    interaction: str,
    iti: str,
    outcome: int = AuditOutcome.SUCCESS,
    entity: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Audit one lookup in a transaction of its own, after the read (a lookup changes nothing,
    so there is no other transaction to join, and on SQLite no read holds the write lock).

    ``interaction`` is the FHIR restful interaction (``operation``, ``search-type``); ``iti``
    the IHE transaction (``ITI-83``, ``ITI-119``, ``ITI-78``), kept in the detail.
    """
    with transaction(context.sessions) as session:
        audit.record(
            session,
            action=action,
            outcome=int(outcome),
            interaction=interaction,
            agent=caller.name,
            agent_kind=AgentKind.SYSTEM,
            source_address=caller.address,
            entity=entity,
            detail={"transaction": iti, **(detail or {})},
        )


__all__ = [
    "READ_DEMOGRAPHICS",
    "READ_IDENTIFIERS",
    "Caller",
    "record_lookup",
    "require_permission",
]
