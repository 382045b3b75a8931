"""The AuditEvent an audit repository (ATNA) and an auditor's export receive for one
``audit_event`` row: the IHE shapes for the registry's IHE transactions, the stored resource
for everything else.

For ITI-83 (PIXm query), ITI-78 (PDQm query), ITI-119 (PDQm match) and ITI-104 (patient
identity feed) the resource follows the PIXm and PDQm audit profiles (the Manager / Supplier
side, which is this registry): ``type`` is ``audit-event-type#rest``, ``subtype`` holds the
RESTful interaction and the IHE transaction (``urn:ihe:event-type-code``), the client agent is
DICOM 110153 *Source Role ID* (with its network address) and the server agent 110152
*Destination Role ID*, which is also the audit source (``source.observer``). Entities: the
Patient (``audit-entity-type#1``, ``object-role#1``); for the queries the query itself
(``#2`` / ``object-role#24``, base64 in ``query``); for the feed the Patient resource stored
(``#2`` / ``object-role#4`` *Domain Resource*). The queries' ``action`` is ``E``, as in the
guides' examples.

Every resource gets the event's place in the tamper-evident chain as its ``id`` (``cr-<seq>``,
or ``cr-e<id>`` for an event outside the chain) and the chain hash in an extension, so a
receiver can see what it got twice or missed.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Final

from clientregistry.fhir.audit import event_subtype
from clientregistry.fhir.codes import DICOM_SYSTEM, RESTFUL_INTERACTION_SYSTEM
from clientregistry.fhir.datatypes import instant

CHAIN_EXTENSION: Final = "urn:clientregistry:audit-chain"
"""The extension carrying ``<chain_seq>:<chain_hash>`` of the event."""
REST: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "Restful Operation",
}
QUERIES: Final = frozenset({"ITI-78", "ITI-83", "ITI-119"})
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_OUTCOMES = {0: "0", 4: "4", 8: "8", 12: "12"}


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def event_id(event: Mapping[str, Any]) -> str:
    """The FHIR id of an event: ``cr-<chain_seq>`` (``cr-e<id>`` outside the chain)."""
    seq = event.get("chain_seq")
    return f"cr-{seq}" if seq is not None else f"cr-e{event['id']}"


def ihe_transaction(event: Mapping[str, Any]) -> str | None:
    """The IHE transaction an event records, if any."""
    detail = event.get("detail") or {}
    named = detail.get("transaction") if isinstance(detail, Mapping) else None
    if named in QUERIES:
        return str(named)
    entity = event.get("entity") or ""
    if (
        event.get("event_type") in ("create", "update")
        and entity.startswith("Patient/")
        and _value(event.get("agent_kind")) == "system"
    ):
        return "ITI-104"
    return None


def _network(address: str | None) -> dict[str, str] | None:
    """``network`` of an agent: type 2 for an IP address, 1 for a machine name."""
    if not address:
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"address": address, "type": "1"}
    return {"address": address, "type": "2"}


def _ihe_resource(event: Mapping[str, Any], iti: str, observer: str) -> dict[str, Any]:
    detail = event.get("detail") or {}
    query = iti in QUERIES
    interaction = "search" if query else str(event.get("event_type"))
    client: dict[str, Any] = {
        "type": {
            "coding": [{"system": DICOM_SYSTEM, "code": "110153", "display": "Source Role ID"}]
        },
        "who": {"display": event.get("agent")},
        "requestor": True,
    }
    network = _network(event.get("source_address"))
    if network:
        client["network"] = network
    server = {
        "type": {
            "coding": [{"system": DICOM_SYSTEM, "code": "110152", "display": "Destination Role ID"}]
        },
        "who": {"display": observer},
        "requestor": False,
    }
    entities: list[dict[str, Any]] = []
    entity = event.get("entity")
    if entity:
        entities.append(
            {
                "what": {"reference": entity},
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if query:
        text = str(detail.get("query") or "") if isinstance(detail, Mapping) else ""
        entities.append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            }
        )
    elif entity:
        entities.append(
            {
                "what": {"reference": entity},
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if isinstance(detail, Mapping) and detail and entities:
        entities[0]["detail"] = [
            {"type": str(key), "valueString": str(value)}
            for key, value in detail.items()
            if value is not None
        ]
    recorded = event["recorded"]
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": dict(REST),
        "subtype": [
            {"system": RESTFUL_INTERACTION_SYSTEM, "code": interaction},
            event_subtype(iti),
        ],
        "action": "E" if query else _value(event.get("action")),
        "recorded": instant(recorded) if isinstance(recorded, datetime) else recorded,
        "outcome": _OUTCOMES.get(int(event.get("outcome") or 0), "8"),
        "agent": [client, server],
        "source": {
            "observer": {"display": observer},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if entities:
        resource["entity"] = entities
    return resource


def atna_resource(event: Mapping[str, Any], observer: str = "clientregistry") -> dict[str, Any]:
    """The FHIR AuditEvent for ``event`` (an ``audit_event`` row as a mapping; ``observer``:
    this registry's name as audit source)."""
    iti = ihe_transaction(event)
    if iti is not None:
        resource = _ihe_resource(event, iti, observer)
    else:
        resource = dict(event.get("resource") or {"resourceType": "AuditEvent"})
    resource = {"resourceType": "AuditEvent", "id": event_id(event), **resource}
    resource["id"] = event_id(event)
    if event.get("chain_hash"):
        resource["extension"] = [
            *resource.get("extension", []),
            {"url": CHAIN_EXTENSION, "valueString": f"{event['chain_seq']}:{event['chain_hash']}"},
        ]
    return resource
