"""Makes ``registry-0002.json``: a registry as the previous release (schema revision 0002,
before the operations work of issue 16) leaves it, for the upgrade test
(``tests/store/test_store_upgrade.py``).

Run with the previous release's code first on the path, from the repository root::

    git archive e5f38c8 src | tar -x -C /tmp/previous
    PYTHONPATH=/tmp/previous/src .venv/bin/python tests/store/data/previous_release.py

It makes a registry in a temporary directory (SQLite), submits the README's four example
files and the demo patients as their systems would, breaks one link as a reviewer would, and
writes every table's rows (as SQLite holds them) with the schema revision.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

from clientregistry.registry import links
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.settings import load_settings
from clientregistry.store.db import current_revision, transaction

ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent / "registry-0002.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        init_data_dir(data_dir, hostnames=[])
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        submitted = []
        patients = [
            ("openmrs", "1-openmrs.json"),
            ("dhis2", "2-dhis2.json"),
            ("lims", "3-lims.json"),
            ("lims", "4-lims-update.json"),
        ]
        for system, name in patients:
            resource = json.loads((ROOT / "examples" / name).read_text())
            with transaction(context.sessions) as session:
                client = context.settings.systems[system]
                submitted.append(Submitter(context).submit(session, resource, client))
        demo = ROOT / "src" / "clientregistry" / "demo" / "patients.ndjson"
        for line in demo.read_text().splitlines()[3:]:
            resource = json.loads(line)
            system, value = resource.pop("id").split("-", 1)
            resource["identifier"][0]["value"] = f"demo-{value}"
            with transaction(context.sessions) as session:
                client = context.settings.systems[system]
                submitted.append(Submitter(context).submit(session, resource, client))
        dhis2 = submitted[1]
        with transaction(context.sessions) as session:
            editor = links.LinkEditor(session, context, "reviewer")
            outcome = links.break_record(editor, dhis2.record_id)
            links.audit_outcome(session, outcome, agent="reviewer", source_address=None)
        revision = current_revision(context.engine)
        context.close()
        database = sqlite3.connect(data_dir / "registry.db")
        tables = {}
        names = [
            row[0]
            for row in database.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for name in names:
            cursor = database.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cursor.description]
            tables[name] = {"columns": columns, "rows": [list(r) for r in cursor]}
        database.close()
    document = {"schema_revision": revision, "made_by": "clientregistry e5f38c8", "tables": tables}
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(
        f"wrote {OUT}: revision {revision}, "
        + ", ".join(f"{n} {len(t['rows'])}" for n, t in tables.items())
    )


if __name__ == "__main__":
    main()
