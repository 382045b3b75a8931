"""``Patient/$merge`` (FHIR R5/R6, trial use): one source record replaced by another,
:func:`merge_patients`.

The request is a ``Parameters`` (:func:`parse_merge_request`) naming the *source* (the
duplicate) and the *target* (the survivor), each by ``…-patient`` (a reference) or by
``…-patient-identifier`` (one or more identifiers, all held by the one record), with
optional ``result-patient`` and ``preview``. Both must be source records (a golden record is
the registry's own and is never merged by hand).

The effect is a Resolve Duplicate's (:func:`clientregistry.registry.feed.merge_records`):
the source record joins the target's golden record as a person's decision (it sticks) and
is marked replaced by the target, which serves it ``active: false`` with a ``replaced-by``
link, the target with ``replaces``. Nothing the source system submitted is changed: a merge
is the registry's decision, audited with its change log and revertible like a reviewer's.
``result-patient``, the target as it should be afterwards, is stored as an update of the
target — only by the system that submitted the target (a submission never updates another
system's record). ``preview``: everything is worked out, then rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clientregistry.fhir.errors import FhirError, bad_request, business_rule, forbidden
from clientregistry.fhir.patient import check_patient
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.feed import feed, merge_records
from clientregistry.registry.pix import records_with_identifier
from clientregistry.registry.read import read_patient
from clientregistry.registry.submit import Submitter
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.enums import AgentKind
from clientregistry.store.models import GoldenRecord, SourceRecord

PARAMETERS = (
    "source-patient",
    "source-patient-identifier",
    "target-patient",
    "target-patient-identifier",
    "result-patient",
    "preview",
)
MAX_IDENTIFIERS = 20


@dataclass(frozen=True, slots=True)
class PatientChoice:
    """How the request names one Patient: a reference's id, or identifiers (system, value)."""

    id: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.id is not None:
            return f"Patient/{self.id}"
        return " and ".join(f"{s}|{v}" for s, v in self.identifiers)


@dataclass(frozen=True, slots=True)
class MergeRequest:
    source: PatientChoice
    target: PatientChoice
    result: dict[str, Any] | None = None
    preview: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """The request as sent (the response echoes it as ``input``)."""


def _reference_id(value: Any, where: str) -> str:
    reference = value.get("reference") if isinstance(value, Mapping) else None
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        raise bad_request(f"{where}: expected a reference Patient/<id>", [where])
    return reference.removeprefix("Patient/").split("/_history")[0]


def _identifier(value: Any, where: str) -> tuple[str, str]:
    system = value.get("system") if isinstance(value, Mapping) else None
    code = value.get("value") if isinstance(value, Mapping) else None
    if not (isinstance(system, str) and system and isinstance(code, str) and code):
        raise bad_request(f"{where}: an identifier needs a system and a value", [where])
    return system, code


def parse_merge_request(body: Mapping[str, Any]) -> MergeRequest:
    """A ``Parameters`` of :data:`PARAMETERS` (400 for anything else)."""
    if body.get("resourceType") != "Parameters":
        raise bad_request("$merge takes a Parameters resource", ["Parameters"])
    items = body.get("parameter")
    if not isinstance(items, list) or not items:
        raise bad_request("Parameters.parameter: $merge needs a source and a target")
    ids: dict[str, str] = {}
    identifiers: dict[str, list[tuple[str, str]]] = {"source": [], "target": []}
    result: dict[str, Any] | None = None
    preview = False
    for i, item in enumerate(items):
        where = f"Parameters.parameter[{i}]"
        name = item.get("name") if isinstance(item, Mapping) else None
        if name not in PARAMETERS:
            raise FhirError(
                400,
                "not-supported",
                f"{where}.name: unknown parameter {name!r} (supported: {', '.join(PARAMETERS)})",
                [f"{where}.name"],
            )
        assert isinstance(item, Mapping) and isinstance(name, str)
        side = name.split("-", 1)[0]
        if name in ("source-patient", "target-patient"):
            if side in ids:
                raise bad_request(f"{where}: {name} may be given only once", [where])
            ids[side] = _reference_id(item.get("valueReference"), f"{where}.valueReference")
        elif name.endswith("-identifier"):
            identifiers[side].append(_identifier(item.get("valueIdentifier"), where))
        elif name == "result-patient":
            resource = item.get("resource")
            if not isinstance(resource, dict) or result is not None:
                raise bad_request(f"{where}: one result-patient, a Patient resource", [where])
            check_patient(resource, f"{where}.resource")
            result = dict(resource)
        else:
            flag = item.get("valueBoolean")
            if not isinstance(flag, bool):
                raise bad_request(f"{where}.valueBoolean: preview takes a boolean", [where])
            preview = flag
    choices = {}
    for side in ("source", "target"):
        given = identifiers[side]
        if (side in ids) == bool(given):
            raise bad_request(
                f"$merge needs the {side} Patient by exactly one of {side}-patient and "
                f"{side}-patient-identifier",
                code="required" if side not in ids and not given else "invalid",
            )
        if len(given) > MAX_IDENTIFIERS:
            raise bad_request(f"at most {MAX_IDENTIFIERS} {side}-patient-identifier")
        choices[side] = PatientChoice(ids.get(side), tuple(given))
    return MergeRequest(choices["source"], choices["target"], result, preview, body)


def resolve_patient(
    session: Session, context: RegistryContext, choice: PatientChoice, role: str
) -> str:
    """The source record ``choice`` names (422 when none, several, or a golden record)."""
    if choice.id is not None:
        if session.get(GoldenRecord, choice.id) is not None:
            raise business_rule(
                f"The {role} {choice} is a golden record; $merge merges source records"
            )
        found = session.scalar(select(SourceRecord.id).where(SourceRecord.id == choice.id))
        if found is None:
            raise business_rule(f"The {role} {choice} is not known here")
        return str(found)
    holders: set[str] | None = None
    for system, value in choice.identifiers:
        held = {r.id for r in records_with_identifier(session, context.settings, system, value)}
        holders = held if holders is None else holders & held
    if not holders:
        raise business_rule(f"No Patient holds the {role} identifier(s) {choice}")
    if len(holders) > 1:
        raise business_rule(
            f"Several Patients hold the {role} identifier(s) {choice}; name it by reference"
        )
    return holders.pop()


@dataclass(frozen=True, slots=True)
class Merged:
    """What a merge did (or, previewed, would do)."""

    source_id: str
    target_id: str
    golden_id: str
    result: dict[str, Any]
    """The target Patient after the merge, as the registry serves it."""


def merge_patients(
    session: Session,
    context: RegistryContext,
    request: MergeRequest,
    caller: ClientSystemConfig,
    *,
    agent_kind: AgentKind,
    source_address: str | None,
) -> Merged:
    """Merge (see the module docstring) in the caller's transaction; roll it back for a
    preview."""
    source_id = resolve_patient(session, context, request.source, "source")
    target_id = resolve_patient(session, context, request.target, "target")
    if source_id == target_id:
        raise business_rule(f"The source and the target are the same Patient/{source_id}")
    if request.result is not None:
        _store_result(session, context, request.result, target_id, caller, source_address)
    outcome = merge_records(
        session,
        context,
        source_id,
        target_id,
        agent=caller.name,
        agent_kind=agent_kind,
        source_address=source_address,
    )
    assert outcome.golden_id is not None
    result, _ = read_patient(session, context.settings, target_id)
    return Merged(source_id, target_id, outcome.golden_id, result)


def _store_result(
    session: Session,
    context: RegistryContext,
    result: dict[str, Any],
    target_id: str,
    caller: ClientSystemConfig,
    source_address: str | None,
) -> None:
    """``result-patient``: an update of the target by the system that submitted it."""
    if result.get("id") != target_id:
        raise bad_request(
            f"result-patient must have the target's id {target_id!r}",
            ["Parameters.parameter.resource.id"],
        )
    owner = session.scalar(select(SourceRecord.client_system).where(SourceRecord.id == target_id))
    if owner != caller.name or "submit" not in caller.permissions:
        raise forbidden(
            f"result-patient updates Patient/{target_id}, which only the client system that "
            "submitted it may do"
        )
    feed(
        session,
        context,
        Submitter(context).prepare(result, caller),
        url_id=target_id,
        source_address=source_address,
    )


__all__ = [
    "MergeRequest",
    "Merged",
    "PatientChoice",
    "merge_patients",
    "parse_merge_request",
    "resolve_patient",
]
