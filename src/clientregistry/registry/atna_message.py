"""What goes on the wire to an audit repository (ITI-20): an RFC 5424 syslog message per
audit event, framed by octet counting (RFC 5425 §4.3), holding the event as a FHIR
AuditEvent (JSON) or as a DICOM PS3.15 audit message (XML).

The header: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID``, with facility 10
(security/authorization) and severity 5 (notice; 4, warning, for a failed action), MSGID
``IHE+RFC-3881`` for the DICOM format (as ITI-20 asks) and ``IHE+FHIR`` for the FHIR one. The
structured data ``[meta sequenceId="N"]`` (RFC 5424 §7.3.1) carries the event's place in the
tamper-evident chain, so a receiver sees any gap or repeat. The message is UTF-8 after a BOM.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from clientregistry.registry.atna_event import atna_resource

FACILITY: Final = 10
"""security/authorization messages (ITI-20)."""
BOM: Final = b"\xef\xbb\xbf"
MAX_SEQUENCE_ID: Final = 2_147_483_647


def _header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` long; ``-`` if
    empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dicom_xml(resource: Mapping[str, Any]) -> bytes:
    """The DICOM PS3.15 (A.5) audit message for a FHIR AuditEvent built by
    :func:`~clientregistry.registry.atna_event.atna_resource`."""
    root = ElementTree.Element("AuditMessage")
    codes = [c for c in resource.get("subtype", []) if c.get("system") == "urn:ihe:event-type-code"]
    event_type = resource.get("type") or {}
    identification = ElementTree.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": str(resource.get("action", "E")),
            "EventDateTime": str(resource.get("recorded", "")),
            "EventOutcomeIndicator": str(resource.get("outcome", "0")),
        },
    )
    ElementTree.SubElement(
        identification,
        "EventID",
        {
            "csd-code": str(event_type.get("code", "")),
            "codeSystemName": "DCM" if "dicom" in str(event_type.get("system")) else "FHIR",
            "originalText": str(event_type.get("display", "")),
        },
    )
    for code in codes or [c for c in resource.get("subtype", [])]:
        ElementTree.SubElement(
            identification,
            "EventTypeCode",
            {
                "csd-code": str(code.get("code", "")),
                "codeSystemName": "IHE Transactions"
                if code.get("system") == "urn:ihe:event-type-code"
                else str(code.get("system", "")),
                "originalText": str(code.get("display", code.get("code", ""))),
            },
        )
    for agent in resource.get("agent", []):
        attributes = {
            "UserID": str((agent.get("who") or {}).get("display", "")),
            "UserIsRequestor": "true" if agent.get("requestor") else "false",
        }
        network = agent.get("network")
        if network:
            attributes["NetworkAccessPointID"] = str(network.get("address", ""))
            attributes["NetworkAccessPointTypeCode"] = str(network.get("type", ""))
        participant = ElementTree.SubElement(root, "ActiveParticipant", attributes)
        for coding in (agent.get("type") or {}).get("coding", []):
            ElementTree.SubElement(
                participant,
                "RoleIDCode",
                {
                    "csd-code": str(coding.get("code", "")),
                    "codeSystemName": "DCM",
                    "originalText": str(coding.get("display", "")),
                },
            )
    source = resource.get("source") or {}
    audit_source = ElementTree.SubElement(
        root,
        "AuditSourceIdentification",
        {"AuditSourceID": str((source.get("observer") or {}).get("display", ""))},
    )
    ElementTree.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})
    for entity in resource.get("entity", []):
        what = entity.get("what") or {}
        participant = ElementTree.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": str(what.get("reference", "")),
                "ParticipantObjectTypeCode": str((entity.get("type") or {}).get("code", "")),
                "ParticipantObjectTypeCodeRole": str((entity.get("role") or {}).get("code", "")),
            },
        )
        ElementTree.SubElement(
            participant,
            "ParticipantObjectIDTypeCode",
            {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"}
            if (entity.get("role") or {}).get("code") == "1"
            else {
                "csd-code": codes[0]["code"] if codes else "",
                "codeSystemName": "IHE Transactions",
            },
        )
        if "query" in entity:
            query = ElementTree.SubElement(participant, "ParticipantObjectQuery")
            query.text = str(entity["query"])
        for detail in entity.get("detail", []):
            ElementTree.SubElement(
                participant,
                "ParticipantObjectDetail",
                {"type": str(detail.get("type", "")), "value": str(detail.get("valueString", ""))},
            )
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=False))


def syslog_message(
    event: Mapping[str, Any],
    *,
    message_format: str = "fhir",
    app_name: str = "clientregistry",
    hostname: str | None = None,
    procid: int | None = None,
) -> bytes:
    """The RFC 5424 message for one ``audit_event`` row (a mapping)."""
    resource = atna_resource(event, app_name)
    outcome = int(event.get("outcome") or 0)
    priority = FACILITY * 8 + (5 if outcome == 0 else 4)
    recorded = event.get("recorded")
    timestamp = _timestamp(recorded) if isinstance(recorded, datetime) else "-"
    if message_format == "dicom":
        msgid, body = "IHE+RFC-3881", dicom_xml(resource)
    else:
        msgid, body = "IHE+FHIR", orjson.dumps(resource)
    seq = event.get("chain_seq")
    structured = (
        f'[meta sequenceId="{seq}"]' if seq is not None and 0 < seq <= MAX_SEQUENCE_ID else "-"
    )
    header = " ".join(
        (
            f"<{priority}>1",
            timestamp,
            _header_field(hostname or os.uname().nodename, 255),
            _header_field(app_name, 48),
            str(procid if procid is not None else os.getpid()),
            msgid,
            structured,
        )
    )
    return header.encode("ascii") + b" " + BOM + body


def frame(message: bytes) -> bytes:
    """RFC 5425 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)
