"""``clientregistry serve`` with an audit repository configured (``CR_ATNA_…``): its audit
forwarder process sends what the FHIR API audits to a real rsyslogd over TLS, started after
the server (the events wait until it is there), and the backlog shows in the metrics."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from registry_servers import FreshDatabase, id_system, running_server

sys.path.insert(0, str(Path(__file__).parent.parent / "registry"))
from audit_repository import AuditRepository, wait_for

from clientregistry.security.certificates import read_certificate

LINE = re.compile(r'^\[meta sequenceId="(\d+)"\] (.*)$')


def test_the_server_sends_its_audit_trail(tmp_path: Path, fresh_database: FreshDatabase) -> None:
    repository = AuditRepository(tmp_path / "repository")
    env = {
        "CR_ATNA_HOST": "localhost",
        "CR_ATNA_PORT": str(repository.port),
        "CR_ATNA_CA_FILE": str(repository.ca_file),
        "CR_ATNA_APP_NAME": "cr-under-test",
        "CR_METRICS_TOKEN": "metrics-secret",
    }
    with running_server(tmp_path / "server", "sqlite", fresh_database, env=env) as server:
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": id_system("kiosk"), "value": "k-1"}],
            "name": [{"family": "Atieno", "given": ["Mary"]}],
            "birthDate": "1990-03-04",
            "gender": "female",
        }
        assert server.submit("kiosk", patient).status_code == 201

        def backlog() -> int | None:
            metrics = server.client("hie").get(
                "/metrics", headers={"Authorization": "Bearer metrics-secret"}
            )
            assert metrics.status_code == 200
            found = re.search(r"clientregistry_audit_backlog\{[^}]*\} ([0-9.e+]+)", metrics.text)
            return None if found is None else int(float(found[1]))

        # The repository is not there yet: the events wait, and the backlog says so.
        wait_for(lambda: (backlog() or 0) >= 1, timeout=120, what="a backlog")
        repository.trust(read_certificate(server.certs_dir / "ca.pem"))
        repository.start()
        try:
            wait_for(
                lambda: any("ITI-104" in line for line in repository.lines()),
                timeout=120,
                what="the submission's audit event",
            )
            wait_for(lambda: backlog() == 0, timeout=120, what="the backlog to drain")
        finally:
            repository.stop()
    events = []
    for line in repository.lines():
        match = LINE.match(line)
        assert match, line
        events.append((int(match[1]), json.loads(match[2].lstrip("\ufeff").strip())))
    feed = [r for _, r in events if r["subtype"][-1]["code"] == "ITI-104"]
    assert feed[0]["agent"][0]["who"]["display"] == "kiosk"
    assert feed[0]["source"]["observer"]["display"] == "cr-under-test"
    sequence = [seq for seq, _ in events]
    assert sequence == sorted(set(sequence))
