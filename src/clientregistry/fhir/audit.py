"""FHIR R4 AuditEvent resources (IHE ATNA / BALP patterns) for everything the registry does.

One function, :func:`audit_event`, builds the resource: the event type (DICOM, e.g. 110110
Patient Record), the IHE transaction or RESTful interaction as subtype, the requesting client
(source, with its network address) and this server (destination), and the Patient concerned
with free-form details. ``recorded`` is always written in UTC.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from clientregistry.fhir.codes import (
    DICOM_SYSTEM,
    IHE_EVENT_TYPE_SYSTEM,
    RESTFUL_INTERACTION_SYSTEM,
)
from clientregistry.fhir.datatypes import instant

Action = Literal["C", "R", "U", "D", "E"]
Outcome = Literal["0", "4", "8", "12"]
"""0 success, 4 minor failure (client error), 8 serious failure (server error), 12 major."""

PATIENT_RECORD: Final = MappingProxyType(
    {"system": DICOM_SYSTEM, "code": "110110", "display": "Patient Record"}
)
QUERY: Final = MappingProxyType({"system": DICOM_SYSTEM, "code": "110112", "display": "Query"})
USER_AUTHENTICATION: Final = MappingProxyType(
    {"system": DICOM_SYSTEM, "code": "110114", "display": "User Authentication"}
)
APPLICATION_ACTIVITY: Final = MappingProxyType(
    {"system": DICOM_SYSTEM, "code": "110100", "display": "Application Activity"}
)

IHE_TRANSACTIONS: Mapping[str, str] = {
    "ITI-78": "Mobile Patient Demographics Query",
    "ITI-83": "Mobile Patient Identifier Cross-reference Query",
    "ITI-104": "Patient Identity Feed FHIR",
    "ITI-119": "Patient Demographics Match",
}
RESTFUL_INTERACTIONS = frozenset(
    {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search",
        "search-type",
        "search-system",
        "capabilities",
        "transaction",
        "batch",
        "operation",
    }
)

_SOURCE_ROLE = {"system": DICOM_SYSTEM, "code": "110153", "display": "Source Role ID"}
_HUMAN_USER = {
    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
    "code": "humanuser",
    "display": "human user",
}
_DESTINATION_ROLE = {"system": DICOM_SYSTEM, "code": "110152", "display": "Destination Role ID"}
_SOURCE_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
    "code": "4",
    "display": "Application Server",
}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"


def event_subtype(code: str) -> dict[str, str]:
    """The Coding of an IHE transaction (``ITI-104``) or RESTful interaction (``create``)."""
    if code in IHE_TRANSACTIONS:
        return {"system": IHE_EVENT_TYPE_SYSTEM, "code": code, "display": IHE_TRANSACTIONS[code]}
    if code in RESTFUL_INTERACTIONS:
        return {"system": RESTFUL_INTERACTION_SYSTEM, "code": code}
    raise ValueError(f"unknown event type code {code!r}")


def _network(address: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"address": address, "type": "1"}  # machine name
    return {"address": address, "type": "2"}  # IP address


def audit_event(
    action: Action,
    outcome: Outcome,
    *,
    recorded: datetime,
    agent_name: str,
    agent_is_user: bool,
    source_address: str | None,
    entity_reference: str | None,
    event_type_code: str,
    detail: Mapping[str, object] | None = None,
    event_type: Mapping[str, str] = PATIENT_RECORD,
    outcome_desc: str | None = None,
    observer: str = "clientregistry",
    query: bytes | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 AuditEvent.

    ``agent_name`` is who asked (a client id, i.e. certificate CN, or a user name);
    ``agent_is_user`` says whether it is a person (agent type ``humanuser``) or a system
    (DICOM 110153 Source Role ID); this server is the second agent (110152 Destination).
    ``source_address`` is the requester's network address.
    ``entity_reference`` (``Patient/123``) is the record concerned, with ``detail`` as
    ``entity.detail`` (values written as strings). ``query`` (raw query, base64-encoded into
    ``entity.query``) is for searches: pass ``event_type=QUERY``. ``event_type_code`` is an IHE
    transaction (``ITI-104``) or a RESTful interaction (``create``, ``read`` ...).
    """
    if action not in ("C", "R", "U", "D", "E"):
        raise ValueError(f"unknown action {action!r}")
    if outcome not in ("0", "4", "8", "12"):
        raise ValueError(f"unknown outcome {outcome!r}")
    role = _HUMAN_USER if agent_is_user else _SOURCE_ROLE
    requester: dict[str, Any] = {
        "type": {"coding": [dict(role)]},
        "who": {"display": agent_name},
        "name": agent_name,
        "requestor": True,
    }
    if source_address:
        requester["network"] = _network(source_address)
    server = {
        "type": {"coding": [dict(_DESTINATION_ROLE)]},
        "who": {"display": observer},
        "requestor": False,
    }
    out: dict[str, Any] = {"resourceType": "AuditEvent"}
    if id is not None:
        out["id"] = id
    out["type"] = dict(event_type)
    out["subtype"] = [event_subtype(event_type_code)]
    out["action"] = action
    out["recorded"] = instant(recorded)
    out["outcome"] = outcome
    if outcome_desc:
        out["outcomeDesc"] = outcome_desc
    out["agent"] = [requester, server]
    out["source"] = {"observer": {"display": observer}, "type": [dict(_SOURCE_TYPE)]}
    entities = []
    details = [{"type": str(k), "valueString": str(v)} for k, v in (detail or {}).items()]
    if entity_reference is not None or details:
        patient: dict[str, Any] = {}
        if entity_reference is not None:
            patient["what"] = {"reference": entity_reference}
        patient["type"] = {"system": _ENTITY_TYPE, "code": "1", "display": "Person"}
        patient["role"] = {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}
        if details:
            patient["detail"] = details
        entities.append(patient)
    if query is not None:
        entities.append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(query).decode("ascii"),
            }
        )
    if entities:
        out["entity"] = entities
    return out
