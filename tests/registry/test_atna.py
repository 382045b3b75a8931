"""ATNA: the audit trail reaches a real audit repository (rsyslogd with rsyslog-gnutls, RFC
5425 syslog over mutual TLS) in order and exactly once, across a stop and a restart of the
repository in the middle of a run, in the IHE shapes of ITI-104, ITI-78, ITI-83 and ITI-119;
the DICOM audit message format too; a repository that cannot be reached or trusted only
leaves a backlog."""

from __future__ import annotations

import base64
import json
import re
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from audit_repository import AuditRepository, wait_for

from clientregistry.registry import audit
from clientregistry.registry.atna_event import CHAIN_EXTENSION
from clientregistry.registry.atna_message import frame, syslog_message
from clientregistry.registry.atna_sender import AuditForwarder, DeliveryFailed
from clientregistry.registry.atna_settings import AtnaSettings
from clientregistry.registry.audit_integrity import verify_chain
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.security.certificates import read_certificate
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction

FreshDatabase = Callable[[str], AbstractContextManager[str]]
LINE = re.compile(r'^\[meta sequenceId="(\d+)"\] (.*)$')
LOOKUPS = [("ITI-78", "search-type"), ("ITI-83", "operation"), ("ITI-119", "operation")]


@pytest.fixture(params=["sqlite", "postgresql"])
def context(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database: FreshDatabase
) -> Iterator[RegistryContext]:
    with fresh_database(request.param) as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(tmp_path / "data", environ={}))
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def repository(context: RegistryContext, tmp_path: Path) -> Iterator[AuditRepository]:
    """The receiver trusts the registry's CA: the registry presents its server certificate."""
    ca = read_certificate(context.settings.certs_dir / "ca.pem")
    receiver = AuditRepository(tmp_path / "repository", ca)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def atna_settings(context: RegistryContext, receiver: AuditRepository) -> AtnaSettings:
    config = context.settings.data_dir / "config.toml"
    text = config.read_text(encoding="utf-8")
    assert 'host = ""\nport = 6514\n' in text  # as `init` writes it
    config.write_text(
        text.replace(
            'host = ""\nport = 6514\n',
            f'host = "localhost"\nport = {receiver.port}\nca_file = "{receiver.ca_file}"\n',
        ),
        encoding="utf-8",
    )
    settings = load_settings(context.settings.data_dir, environ={}).atna
    assert settings is not None and settings.cert_file.name == "server.pem"
    return settings


class Events:
    """Audited actions of every kind the IHE profiles describe, counted."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self.written = 0
        self.lookups = 0

    def submit(self, n: int) -> None:
        config = self.context.settings.systems["openmrs"]
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": config.internal_id_system, "value": f"om-{n}"}],
            "name": [{"family": f"Nakato{n}", "given": ["Grace"]}],
            "birthDate": "1980-02-01",
            "gender": "female",
        }
        with transaction(self.context.sessions) as session:
            Submitter(self.context).submit(session, patient, config)
        self.written += 1

    def lookup(self, n: int) -> None:
        iti, interaction = LOOKUPS[self.lookups % len(LOOKUPS)]
        self.lookups += 1
        with transaction(self.context.sessions) as session:
            audit.record(
                session,
                action=AuditAction.EXECUTE,
                outcome=0,
                interaction=interaction,
                agent="dhis2",
                agent_kind=AgentKind.SYSTEM,
                source_address="10.1.2.3",
                entity="Patient/42",
                detail={"transaction": iti, "query": f"identifier=urn:x|{n}"},
            )
        self.written += 1

    def some(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            if n % 3 == 0:
                self.submit(n)
            else:
                self.lookup(n)


def received(receiver: AuditRepository) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for line in receiver.lines():
        match = LINE.match(line)
        assert match, f"not a message of ours: {line!r}"
        out.append((int(match[1]), json.loads(match[2].lstrip("\ufeff").strip())))
    return out


def test_every_event_arrives_once_in_order_across_a_restart(
    context: RegistryContext, repository: AuditRepository
) -> None:
    forwarder = AuditForwarder(context.sessions, atna_settings(context, repository))
    start = forwarder.cursor()  # delivery starts after what was recorded before
    sender = threading.Thread(target=forwarder.run, daemon=True)
    sender.start()
    events = Events(context)
    try:
        events.some(0, 24)
        wait_for(lambda: len(repository.lines()) >= 10, what="the first events to arrive")
        repository.stop()  # in the middle of the run: events keep being recorded
        events.some(24, 24)
        assert forwarder.backlog() > 0
        repository.start()
        events.some(48, 12)
        wait_for(lambda: forwarder.backlog() == 0, timeout=120, what="the backlog to drain")
        wait_for(lambda: len(repository.lines()) >= events.written, what="every event")
    finally:
        forwarder.stop()
        sender.join(30)
    got = received(repository)
    sequence = [seq for seq, _ in got]
    assert sequence == list(range(start + 1, start + events.written + 1))  # once, in order
    assert [r["id"] for _, r in got] == [f"cr-{seq}" for seq in sequence]
    assert all(r["extension"][0]["url"] == CHAIN_EXTENSION for _, r in got)
    kinds = {r["subtype"][1]["code"] for _, r in got if len(r["subtype"]) == 2}
    assert kinds == {"ITI-104", "ITI-78", "ITI-83", "ITI-119"}
    assert verify_chain(context.sessions).ok


def test_the_events_follow_the_ihe_profiles(
    context: RegistryContext, repository: AuditRepository
) -> None:
    forwarder = AuditForwarder(context.sessions, atna_settings(context, repository))
    forwarder.cursor()
    events = Events(context)
    events.some(0, 5)  # a feed (ITI-104), ITI-78, ITI-83, a feed, ITI-119
    try:
        assert forwarder.deliver_pending() == 5
    finally:
        forwarder.close()
    wait_for(lambda: len(repository.lines()) == 5, what="five events")
    by_iti = {r["subtype"][1]["code"]: r for _, r in received(repository)}
    feed, pix, match = by_iti["ITI-104"], by_iti["ITI-83"], by_iti["ITI-119"]
    assert by_iti["ITI-78"]["subtype"][0]["code"] == "search"
    rest = {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    for resource in (feed, pix, match):
        assert resource["type"] == rest
        assert resource["subtype"][1]["system"] == "urn:ihe:event-type-code"
        client, server = resource["agent"]
        assert client["type"]["coding"][0]["code"] == "110153" and client["requestor"]
        assert server["type"]["coding"][0]["code"] == "110152"
        assert server["who"] == resource["source"]["observer"]  # the audit source is the server
        patient = resource["entity"][0]
        assert (patient["type"]["code"], patient["role"]["code"]) == ("1", "1")
    assert feed["action"] == "C" and feed["subtype"][0]["code"] == "create"
    data = feed["entity"][1]
    assert (data["type"]["code"], data["role"]["code"]) == ("2", "4")
    assert data["what"] == feed["entity"][0]["what"]
    assert pix["action"] == "E" and pix["subtype"][0]["code"] == "search"
    query = pix["entity"][1]
    assert (query["type"]["code"], query["role"]["code"]) == ("2", "24")
    assert base64.b64decode(query["query"]).decode() == "identifier=urn:x|2"
    assert pix["agent"][0]["network"] == {"address": "10.1.2.3", "type": "2"}


def test_the_dicom_format(context: RegistryContext, repository: AuditRepository) -> None:
    settings = replace(atna_settings(context, repository), format="dicom")
    forwarder = AuditForwarder(context.sessions, settings)
    forwarder.cursor()
    Events(context).lookup(0)  # ITI-78
    try:
        assert forwarder.deliver_pending() == 1
    finally:
        forwarder.close()
    wait_for(lambda: len(repository.lines()) == 1, what="the event")
    line = repository.lines()[0]
    message = ElementTree.fromstring(line.split("] ", 1)[1].lstrip("\ufeff").strip())
    assert message.tag == "AuditMessage"
    types = [e.get("csd-code") for e in message.iter("EventTypeCode")]
    assert "ITI-78" in types
    roles = [e.get("csd-code") for e in message.iter("RoleIDCode")]
    assert roles == ["110153", "110152"]
    queries = list(message.iter("ParticipantObjectQuery"))
    assert base64.b64decode(queries[0].text or "").decode() == "identifier=urn:x|0"


def test_an_untrusted_repository_gets_nothing_and_loses_nothing(
    context: RegistryContext, tmp_path: Path
) -> None:
    """A repository whose certificate our CA file does not vouch for is refused; the events
    wait in the backlog."""
    other_ca = read_certificate(context.settings.certs_dir / "ca.pem")
    receiver = AuditRepository(tmp_path / "impostor", other_ca)
    receiver.start()
    try:
        settings = replace(
            atna_settings(context, receiver), ca_file=context.settings.certs_dir / "ca.pem"
        )
        forwarder = AuditForwarder(context.sessions, settings)
        forwarder.cursor()
        Events(context).some(1, 3)
        with pytest.raises(DeliveryFailed, match="TLS handshake"):
            forwarder.deliver_pending()
        assert forwarder.backlog() == 3 and receiver.lines() == []
    finally:
        receiver.stop()


def test_the_syslog_frame() -> None:
    from datetime import UTC, datetime

    event = {
        "id": 7,
        "chain_seq": 5,
        "chain_hash": "ab" * 32,
        "recorded": datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC),
        "action": "R",
        "outcome": 4,
        "event_type": "read",
        "agent": "openmrs",
        "agent_kind": "system",
        "source_address": None,
        "entity": "Patient/1",
        "detail": {"status": 404},
        "resource": {"resourceType": "AuditEvent", "action": "R"},
        "request_id": None,
    }
    message = syslog_message(event, app_name="my registry", hostname="cr-1", procid=9)
    header, body = message.split(b"\xef\xbb\xbf", 1)
    assert header == (
        b'<84>1 2026-12-07T01:02:03.456789Z cr-1 myregistry 9 IHE+FHIR [meta sequenceId="5"] '
    )
    assert json.loads(body)["id"] == "cr-5"
    assert frame(message) == str(len(message)).encode() + b" " + message
