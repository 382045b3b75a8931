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
the permissions a caller needs (:func:`require_permission`), what a caller sees of a record
(:func:`source_view`, :func:`check_golden_read`) and :func:`record_lookup`.

What a caller sees: a golden record (no demographics) with ``read-identifiers`` or
``read-demographics``; a source record in full with ``read-demographics``, otherwise — with
``read-identifiers``, or when it is the caller's own record — as
:func:`~clientregistry.fhir.patient.identifiers_only` shows it (ids, identifiers, links,
``active``, tags: what PIXm tells anyway). The default permissions (``submit``,
``read-identifiers``) make OpenCR's CRUID look-up work for a point-of-service system without
ever handing it demographics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from clientregistry.fhir.codes import CLIENT_ID_SYSTEM
from clientregistry.fhir.errors import forbidden
from clientregistry.fhir.patient import identifiers_only
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


def may_read_demographics(system: ClientSystemConfig) -> bool:
    return READ_DEMOGRAPHICS in system.permissions


def record_owner(resource: Mapping[str, Any]) -> str | None:
    """The client system that submitted a served source record (its client tag)."""
    for tag in resource.get("meta", {}).get("tag") or ():
        if tag.get("system") == CLIENT_ID_SYSTEM:
            return str(tag.get("code"))
    return None


def source_view(system: ClientSystemConfig, resource: dict[str, Any]) -> dict[str, Any]:
    """What ``system`` may see of a served source record (see the module docstring); 403
    when nothing."""
    if READ_DEMOGRAPHICS in system.permissions:
        return resource
    if READ_IDENTIFIERS in system.permissions or record_owner(resource) == system.name:
        return identifiers_only(resource)
    raise forbidden(f"{system.name!r} may not read other systems' records")


def check_golden_read(system: ClientSystemConfig) -> None:
    """403 unless ``system`` may read golden records."""
    require_permission(system, READ_IDENTIFIERS, READ_DEMOGRAPHICS)


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
    "check_golden_read",
    "may_read_demographics",
    "record_lookup",
    "record_owner",
    "require_permission",
    "source_view",
]
