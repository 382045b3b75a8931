"""The web UI's page times at 100,000 persons: every page a data manager opens, over HTTPS.

Two ways to get a registry to measure:

* ``python bench/ui_pages.py --prepare DIR [--database-url URL]`` builds a registry meant to
  be kept and measured again (``/work/bench-data/ui100k-sqlite`` for the 100,000-person
  runs): ``clientregistry init``, a third client system ``lab`` (``certs issue``), the
  accounts ``rita`` (reviewer), ``ada`` (admin) and ``otto`` (auditor); the data set
  (default ``bench/out/synthetic_150k.ndjson``: 150,000 records of 102,243 persons; ``python
  bench/datasets.py synthetic --n 150000`` writes it) split 2:2:1 into openmrs, dhis2 and lab
  files, each loaded with the bulk command ``clientregistry import FILE --system NAME`` (the
  real import path: checks, matching, links, audit); then, as a reviewer would, 200 review
  items resolved, 50 records broken out and 20 of those breaks reverted; and, as an admin
  would, a dry-run re-match under a stricter copy of the rules (``--no-rematch`` skips it).
  Run it inside ``flock /tmp/bench.lock`` (about 6 minutes per 150,000 records and more for
  the re-match).
* without ``--data-dir``: a fresh registry under ``bench/out/`` loaded in process with
  ``Submitter.submit`` (``--n`` Patients, half as openmrs and half as dhis2, ~115 records/s),
  the reviewer's traces, an upload of ``--upload`` more Patients and the dry-run re-match;
  removed at the end unless ``--keep``.

``python bench/ui_pages.py --data-dir DIR`` then measures: it starts ``clientregistry serve``
(one worker), signs in through ``/ui/login`` as each role (HTTPS clients without a
certificate, as browsers) and requests every page, and the JSON, fragments and downloads
those pages fetch, ``--requests`` times each at a fixed offered rate (``--rate`` per second,
one request in flight: the time of one page, not of a queue of them) after a warm-up. Each
page is requested by the least role allowed to open it (reviewer, auditor or admin). Inputs
(names with and without a typo, birth dates, identifiers, persons, records, review items,
audit events) are drawn from the registry itself at random with a fixed seed.

It prints one JSON line (p50/p90/p99/max per page, statuses, persons, records, machine load
before and after) and appends it to ``bench/out/ui_pages_results.jsonl``. The target: every
page's p90 under 200 ms (downloads, whose time grows with the file, are reported apart).

The dashboard's figures are kept per process (``registry.statistics``: the trail's counts
extended by the new events, the registry-wide figures refreshed in the background once 15 s
old); ``dashboard-cold`` cycles ``?days=`` through the four periods (only the first request
of each, in the warm-up, lacks its figures; the rest measure kept figures being refreshed
in the background meanwhile). What computing them from scratch costs, as a server's first
figures do, is measured apart, in process (``dashboard_compute_ms``).

Not a test: run on demand (inside ``flock /tmp/bench.lock`` on a shared machine); the
figures depend on the machine and its load, which are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookups import percentile, read_patients
from service import free_port, start_server, wait_ready

from clientregistry.registry import reviewing
from clientregistry.registry.actor import Actor, Refused
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import Resolution
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.security import users
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import IssueKind, IssueStatus, JobOrigin, MatchStatus, Role
from clientregistry.store.models import AuditEvent, GoldenRecord, MatchIssue, SourceRecord

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "ui_pages_results.jsonl"
SYSTEMS = {
    "openmrs": "http://clientregistry.org/openmrs",
    "dhis2": "http://clientregistry.org/dhis2",
}
SPLIT = ("openmrs", "openmrs", "dhis2", "dhis2", "lab")
"""Which system loads the i-th record of the data set (i modulo 5), with ``--prepare``."""
ACCOUNTS = {"rita": Role.REVIEWER, "ada": Role.ADMIN, "otto": Role.AUDITOR}
PASSWORD = "a benchmark password"
TARGET_MS = 200.0
CLI = [sys.executable, "-m", "clientregistry.cli"]


def stored_form(patient: dict[str, Any], system: str) -> dict[str, Any]:
    out = {k: v for k, v in patient.items() if k != "id"}
    out["identifier"] = [
        *(patient.get("identifier") or []),
        {"system": SYSTEMS[system], "value": patient["id"]},
    ]
    return out


def load(data_dir: Path, patients: list[dict[str, Any]], batch: int) -> float:
    """Submit every Patient in process (even ones as openmrs, odd ones as dhis2)."""
    settings = load_settings(data_dir, environ={})
    context = RegistryContext.open(settings)
    submitter = Submitter(context)
    started = time.perf_counter()
    try:
        for first in range(0, len(patients), batch):
            with transaction(context.sessions) as session:
                for i, patient in enumerate(patients[first : first + batch], start=first):
                    system = "openmrs" if i % 2 == 0 else "dhis2"
                    submitter.submit(
                        session, stored_form(patient, system), context.settings.systems[system]
                    )
            done = min(first + batch, len(patients))
            if done % (batch * 40) == 0:
                elapsed = time.perf_counter() - started
                print(f"  loaded {done:,} in {elapsed:.0f} s", file=sys.stderr)
    finally:
        context.close()
    return time.perf_counter() - started


def review_some(data_dir: Path, seed: int) -> dict[str, int]:
    """What reviewers leave behind: decisions, breaks, reverted breaks (all audited)."""
    settings = load_settings(data_dir, environ={})
    context = RegistryContext.open(settings)
    rng = random.Random(seed)
    rita = Actor("rita", Role.REVIEWER, "127.0.0.1")
    done = {"resolved": 0, "broken": 0, "reverted": 0}
    try:
        with transaction(context.sessions, write=False) as session:
            issues = list(
                session.scalars(
                    MatchIssue.__table__.select()
                    .with_only_columns(MatchIssue.id)
                    .where(MatchIssue.status == IssueStatus.OPEN)
                    .limit(200)
                )
            )
            linked = list(
                session.scalars(
                    SourceRecord.__table__.select()
                    .with_only_columns(SourceRecord.id)
                    .where(SourceRecord.match_status == MatchStatus.AUTO)
                    .limit(2000)
                )
            )
        resolutions = list(Resolution)
        for issue_id in issues:
            try:
                reviewing.resolve(context, rita, issue_id, rng.choice(resolutions))
                done["resolved"] += 1
            except Refused:  # an earlier decision settled it already
                pass
        events = []
        for record_id in rng.sample(linked, min(50, len(linked))):
            try:
                events.append(reviewing.break_record(context, rita, record_id, reason="bench"))
                done["broken"] += 1
            except Refused:  # alone in its person by now
                pass
        for event in events[:20]:
            reviewing.revert(context, rita, event.audit_event_id)
            done["reverted"] += 1
    finally:
        context.close()
    return done


def bulk_jobs(data_dir: Path, extra: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """An admin's traces: an upload of ``extra`` (an NDJSON file, as openmrs, through the
    import job use case) and a dry-run re-match under a copy of the rules, both run in
    process, for the pages that show them."""
    import orjson

    from clientregistry.registry import imports

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    timings: dict[str, Any] = {}
    try:
        upload = data_dir / "bench-upload.ndjson"
        with upload.open("wb") as fh:
            for patient in extra:
                fh.write(orjson.dumps({**patient, "id": f"up-{patient['id']}"}) + b"\n")
        started = time.perf_counter()
        job = imports.start_import(
            context,
            upload,
            imports.ImportOptions(system="openmrs"),
            origin=JobOrigin.SERVER,
            actor="ada",
        )
        imports.run_import(context, job.job_id)
        timings["import_rows"] = len(extra)
        timings["import_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        context.close()
    rematch_id, timings["dry_run_seconds"] = dry_run(data_dir)
    return {"import": job.job_id, "rematch": rematch_id, "timings": timings}


def prepare(
    data_dir: Path, data: Path, database_url: str, seed: int, rematch: bool
) -> dict[str, Any]:
    """Build a registry to keep: init, a third system, accounts, the data set loaded with
    the bulk import command (three systems), a reviewer's traces, a dry-run re-match."""
    if data_dir.exists():
        raise SystemExit(f"{data_dir} exists: --prepare builds a new registry")
    env = {**os.environ, "CR_DATABASE_URL": database_url} if database_url else dict(os.environ)
    env.pop("CR_DATA_DIR", None)

    def cli(*args: str, stdin: str | None = None) -> None:
        subprocess.run(
            [*CLI, *args, "--data-dir", str(data_dir)],
            input=stdin,
            text=True,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    init = ["init", "--hostname", "localhost", "--hostname", "127.0.0.1"]
    cli(*init, *(["--database-url", database_url] if database_url else []))
    cli("certs", "issue", "lab")
    for name, role in ACCOUNTS.items():
        cli("users", "add", name, "--role", role.value, stdin=PASSWORD + "\n")
    parts = {system: data_dir / f"load-{system}.ndjson" for system in dict.fromkeys(SPLIT)}
    files = {system: path.open("wb") for system, path in parts.items()}
    with data.open("rb") as source:
        for i, line in enumerate(source):
            files[SPLIT[i % len(SPLIT)]].write(line)
    for fh in files.values():
        fh.close()
    timings: dict[str, Any] = {}
    for system, path in parts.items():
        started = time.perf_counter()
        print(f"importing {path.name} as {system} ...", file=sys.stderr)
        cli("import", str(path), "--system", system)
        timings[f"import_{system}_seconds"] = round(time.perf_counter() - started, 1)
        print(f"  {timings[f'import_{system}_seconds']} s", file=sys.stderr)
    reviewed = review_some(data_dir, seed)
    if rematch:
        print("dry-run re-match ...", file=sys.stderr)
        timings["dry_run_seconds"] = dry_run(data_dir)[1]
    return {"reviewed": reviewed, "timings": timings}


def dry_run(data_dir: Path) -> tuple[int, float]:
    """A dry-run re-match under a stricter copy of the rules (for the rules pages): its job
    id and seconds."""
    import orjson

    from clientregistry.registry import rematch, rules_store, rules_view

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    ada = Actor("ada", Role.ADMIN, "127.0.0.1")
    try:
        document = rules_view.rules_view(context, ada).document
        document["rules"][0]["autoMatchThreshold"] += 1.0
        version = rules_store.store_rules(context, ada, orjson.dumps(document), "bench")
        started = time.perf_counter()
        rematch_id = rematch.start_rematch(
            context, ada, version.id, dry_run=True, origin=JobOrigin.SERVER
        )
        rematch.run_rematch(context, rematch_id, reload_wait=0)
        return rematch_id, round(time.perf_counter() - started, 1)
    finally:
        context.close()


def sign_in(http: httpx.Client, base: str, username: str) -> None:
    page = http.get(f"{base}/ui/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    answer = http.post(
        f"{base}/ui/login",
        data={"username": username, "password": PASSWORD, "login_token": token.group(1)},
    )
    assert answer.status_code in (200, 303) and "cr_session" in http.cookies, answer.text[:500]


def typo(word: str, rng: random.Random) -> str:
    """``word`` with two neighbouring letters swapped (a fuzzy search's input)."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _name(resource: dict[str, Any]) -> tuple[str, str] | None:
    for name in resource.get("name") or []:
        given = (name.get("given") or [""])[0]
        family = name.get("family") or ""
        if given and family:
            return given, family
    return None


def _ids(session: Any, column: Any, *where: Any, n: int = 500) -> list[Any]:
    from sqlalchemy import func, select

    return list(session.scalars(select(column).where(*where).order_by(func.random()).limit(n)))


def inputs(data_dir: Path, seed: int) -> dict[str, list[Any]]:
    """What the pages are asked about, drawn from the registry at random."""
    from sqlalchemy import select

    from clientregistry.registry.people import source_records
    from clientregistry.registry.rules_store import list_versions

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    rng = random.Random(seed)
    ada = Actor("ada", Role.ADMIN, "127.0.0.1")
    try:
        with transaction(context.sessions, write=False) as session:
            record_ids = _ids(session, SourceRecord.id, n=1000)
            stored = source_records(session, [SourceRecord.id.in_(record_ids)])
            open_issue = MatchIssue.status == IssueStatus.OPEN
            potential = _ids(
                session, MatchIssue.id, open_issue, MatchIssue.kind == IssueKind.POTENTIAL
            )
            conflict = _ids(
                session, MatchIssue.id, open_issue, MatchIssue.kind == IssueKind.CONFLICT
            )
            auto = _ids(
                session,
                SourceRecord.id,
                SourceRecord.match_status == MatchStatus.AUTO,
                SourceRecord.human_adjudicated.is_(False),
            )
            events = _ids(session, AuditEvent.id)
            # the last event of page 999 of the trail: where page 1,000's pager link starts
            deep = session.scalar(
                select(AuditEvent.id).order_by(AuditEvent.id.desc()).offset(49_949).limit(1)
            )
            agents = sorted(set(_ids(session, AuditEvent.agent, n=5000)))
            event_types = sorted(set(_ids(session, AuditEvent.event_type, n=5000)))
        versions = [v.id for v in list_versions(context, ada)]
    finally:
        context.close()
    rng.shuffle(stored)
    named = [(r, n) for r in stored if (n := _name(r.resource))]
    national = [
        (i["system"], i["value"])
        for r in stored
        for i in r.resource.get("identifier") or []
        if i.get("system") and i.get("value") and "clientregistry.org" not in i["system"]
    ]
    return {
        "names": [f"{g} {f}" for _, (g, f) in named],
        "typos": [f"{g} {typo(f, rng)}" for _, (g, f) in named],
        "families": [f for _, (_, f) in named],
        "name_dates": [
            (f"{g} {f}", r.resource["birthDate"])
            for r, (g, f) in named
            if r.resource.get("birthDate")
        ],
        "name_genders": [
            (f"{g} {f}", r.resource["gender"])
            for r, (g, f) in named
            if r.resource.get("gender") in ("male", "female")
        ],
        "birth_dates": [r.resource["birthDate"] for r in stored if r.resource.get("birthDate")],
        "internal_ids": [r.internal_value for r in stored],
        "names_systems": [(f"{g} {f}", r.client_system) for r, (g, f) in named],
        "national_ids": national or [("", "")],
        "goldens": [r.golden_id for r in stored if r.golden_id],
        "records": [r.id for r in stored],
        "potential": potential or [0],
        "conflict": conflict or [0],
        "auto": auto or [""],
        "events": events,
        "agents": agents,
        "event_types": event_types,
        "versions": versions or [0],
        "deep": [deep or 0],
    }


Page = Callable[[httpx.Client, str, random.Random, dict[str, Any]], httpx.Response]


@dataclass(frozen=True, slots=True)
class Kind:
    """A page (or a request a page makes) and the account that opens it."""

    role: str
    page: Page
    download: bool = False
    """A download whose time grows with the file (reported apart from the target)."""
    needs: str | None = None
    """The input it shows (``import``, ``rematch``, ``versions``, ``potential`` ...): the page
    is skipped when the registry has none."""


def pages() -> dict[str, Kind]:
    Draw = Callable[[random.Random, dict[str, Any]], dict[str, Any]]

    def get(path: str, draw: Draw | None = None) -> Page:
        """GET ``path``; ``draw`` gives its ``{placeholders}`` and query parameters."""

        def request(http: httpx.Client, base: str, rng: random.Random, data: Any) -> httpx.Response:
            values = draw(rng, data) if draw else {}
            url = path.format(**values)
            query = {k: v for k, v in values.items() if "{" + k + "}" not in path}
            return http.get(f"{base}{url}", params=query or None)

        return request

    def pick(key: str, *names: str) -> Draw:
        """One item of ``data[key]`` as the parameter ``names[0]``; a tuple's parts as the
        parameters ``names``."""

        def draw(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
            item = rng.choice(data[key])
            parts = item if len(names) > 1 else (item,)
            return dict(zip(names, parts, strict=True))

        return draw

    def fixed(**values: Any) -> Draw:
        return lambda rng, data: values

    def year(**more: Any) -> Draw:
        return lambda rng, data: {"birth_date": str(rng.randint(1940, 2010)), **more}

    cycle = iter(range(10**9))

    def dashboard_cold(
        http: httpx.Client, base: str, rng: random.Random, data: Any
    ) -> httpx.Response:
        # a period not asked for in the last 15 s: the figures are computed for this request
        return http.get(f"{base}/ui/?days={(7, 30, 90, 365)[next(cycle) % 4]}")

    token: dict[str, str] = {}

    def pair(http: httpx.Client, base: str, rng: random.Random, data: Any) -> httpx.Response:
        if "csrf" not in token:
            found = re.search(
                r'name="csrf_token" value="([^"]+)"', http.get(f"{base}/ui/account").text
            )
            assert found is not None
            token["csrf"] = found.group(1)
        left, right = rng.sample(data["records"], 2)
        form = {"csrf_token": token["csrf"], "left_record": left, "right_record": right}
        return http.post(f"{base}/ui/rules/test", data=form)

    today = time.strftime("%Y-%m-%d", time.gmtime())
    import_job = "/ui/imports/{job}"
    rematch_job = "/ui/rules/rematches/{job}"

    def imported(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
        return {"job": data["import"][0]}

    def rematched(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
        return {"job": data["rematch"][0]}

    def entity(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
        return {"entity": f"Patient/{rng.choice(data['records'])}"}

    def page_1000(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
        # as the pager's "Next" link of page 999 asks for it (an offset alone before it had one)
        return {"offset": 49950, "before": data["deep"][0]}

    people = "/ui/people"
    return {
        "login": Kind("anonymous", get("/ui/login")),
        "static-css": Kind("anonymous", get("/ui/static/app.css")),
        "static-js": Kind("anonymous", get("/ui/static/app.js")),
        "dashboard": Kind("reviewer", get("/ui/")),
        "dashboard-cold": Kind("reviewer", dashboard_cold),
        "people-form": Kind("reviewer", get(people)),
        "find-by-name": Kind("reviewer", get(people, pick("names", "name"))),
        "find-by-name-typo": Kind("reviewer", get(people, pick("typos", "name"))),
        "find-by-family-name": Kind("reviewer", get(people, pick("families", "name"))),
        "find-by-name-and-birth-date": Kind(
            "reviewer", get(people, pick("name_dates", "name", "birth_date"))
        ),
        "find-by-name-and-gender": Kind(
            "reviewer", get(people, pick("name_genders", "name", "gender"))
        ),
        "find-by-name-and-system": Kind(
            "reviewer", get(people, pick("names_systems", "name", "system"))
        ),
        "find-by-birth-date": Kind("reviewer", get(people, pick("birth_dates", "birth_date"))),
        "find-by-birth-year": Kind("reviewer", get(people, year())),
        "find-by-birth-year-page-5": Kind("reviewer", get(people, year(offset=100))),
        "find-by-identifier": Kind("reviewer", get(people, pick("internal_ids", "identifier"))),
        "find-by-identifier-and-system": Kind(
            "reviewer",
            get(people, pick("national_ids", "identifier_system", "identifier")),
        ),
        "find-by-cruid": Kind("reviewer", get(people, pick("goldens", "cruid"))),
        "person": Kind("reviewer", get("/ui/people/{golden}", pick("goldens", "golden"))),
        "record": Kind("reviewer", get("/ui/records/{record}", pick("records", "record"))),
        "record-fhir": Kind(
            "reviewer", get("/ui/records/{record}/fhir", pick("records", "record"))
        ),
        "record-version": Kind(
            "reviewer", get("/ui/records/{record}/versions/1", pick("records", "record"))
        ),
        "review-overview": Kind("reviewer", get("/ui/review")),
        "potential-queue": Kind("reviewer", get("/ui/review/potential")),
        "potential-queue-page-10": Kind("reviewer", get("/ui/review/potential", fixed(offset=450))),
        "conflict-queue": Kind("reviewer", get("/ui/review/conflict")),
        "auto-queue": Kind("reviewer", get("/ui/review/auto")),
        "auto-queue-page-100": Kind("reviewer", get("/ui/review/auto", fixed(offset=4950))),
        "potential-next": Kind("reviewer", get("/ui/review/potential/next")),
        "potential-item": Kind(
            "reviewer",
            get("/ui/review/items/{issue}", pick("potential", "issue")),
            needs="potential",
        ),
        "conflict-item": Kind(
            "reviewer", get("/ui/review/items/{issue}", pick("conflict", "issue")), needs="conflict"
        ),
        "auto-item": Kind(
            "reviewer", get("/ui/review/auto/{record}", pick("auto", "record")), needs="auto"
        ),
        "rules": Kind("reviewer", get("/ui/rules")),
        "pair-form": Kind("reviewer", get("/ui/rules/test")),
        "pair-test": Kind("reviewer", pair),
        "audit": Kind("auditor", get("/ui/audit")),
        "audit-page-2": Kind("auditor", get("/ui/audit", fixed(offset=50))),
        "audit-page-1000": Kind("auditor", get("/ui/audit", page_1000)),
        "audit-offset-49950": Kind("auditor", get("/ui/audit", fixed(offset=49950))),
        "audit-by-agent": Kind("auditor", get("/ui/audit", pick("agents", "agent"))),
        "audit-by-event-type": Kind("auditor", get("/ui/audit", pick("event_types", "event_type"))),
        "audit-failures": Kind("auditor", get("/ui/audit", fixed(outcome="4"))),
        "audit-today": Kind("auditor", get("/ui/audit", fixed(since=today, until=today))),
        "audit-by-person": Kind("auditor", get("/ui/audit", pick("goldens", "person"))),
        "audit-by-entity": Kind("auditor", get("/ui/audit", entity)),
        "audit-event": Kind("auditor", get("/ui/audit/{event}", pick("events", "event"))),
        "account": Kind("auditor", get("/ui/account")),
        "users": Kind("admin", get("/ui/users")),
        "uploads": Kind("admin", get("/ui/imports")),
        "upload-report": Kind("admin", get(import_job, imported), needs="import"),
        "upload-progress": Kind("admin", get(import_job + "/progress", imported), needs="import"),
        "upload-report-csv": Kind(
            "admin", get(import_job + "/report.csv", imported), True, needs="import"
        ),
        "rules-edit": Kind("admin", get("/ui/rules/edit")),
        "rules-versions": Kind("admin", get("/ui/rules/versions")),
        "rules-version": Kind(
            "admin",
            get("/ui/rules/versions/{version}", pick("versions", "version")),
            needs="versions",
        ),
        "rules-dry-run": Kind("admin", get(rematch_job, rematched), needs="rematch"),
        "rules-dry-run-progress": Kind(
            "admin", get(rematch_job + "/progress", rematched), needs="rematch"
        ),
        "rules-dry-run-csv": Kind(
            "admin", get(rematch_job + "/report.csv", rematched), True, needs="rematch"
        ),
    }


def measure(
    http: httpx.Client,
    base: str,
    page: Page,
    data: dict[str, list[Any]],
    requests: int,
    warmup: int,
    rate: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    for _ in range(warmup):
        page(http, base, rng, data).read()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for _ in range(requests):
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        next_at += interval
        started = time.perf_counter()
        response = page(http, base, rng, data)
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p90_ms": round(percentile(latencies, 0.9), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "statuses": statuses,
    }


def latest_jobs(data_dir: Path) -> dict[str, Any]:
    """The newest import and re-match of a reused data directory."""
    from clientregistry.registry import imports, rematch

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        _, made = imports.list_imports(context, 0, 1)
        _, tried = rematch.list_rematches(context, 0, 1)
    finally:
        context.close()
    return {"import": made[0].id if made else 0, "rematch": tried[0].id if tried else 0}


def dashboard_compute_ms(data_dir: Path) -> float:
    """What computing the dashboard's figures from scratch costs (in process, once): what a
    server's first figures cost, off the request path since they are computed in the
    background when the first page of the web UI is asked for."""
    from clientregistry.registry import statistics

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        started = time.perf_counter()
        statistics.compute(context, 30)
        return round((time.perf_counter() - started) * 1000, 1)
    finally:
        context.close()


def counts(data_dir: Path) -> tuple[int, int]:
    from sqlalchemy import func, select

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        with transaction(context.sessions, write=False) as session:
            persons = session.scalar(
                select(func.count()).select_from(GoldenRecord).where(GoldenRecord.active.is_(True))
            )
            records = session.scalar(select(func.count()).select_from(SourceRecord))
    finally:
        context.close()
    return int(persons or 0), int(records or 0)


def fresh(args: argparse.Namespace, port: int) -> tuple[Path, dict[str, Any]]:
    """A registry loaded in process (the first ``--n`` Patients), with a reviewer's and an
    admin's traces."""
    read = read_patients(args.data, args.n + args.upload)
    patients, extra = read[: args.n], read[args.n :]
    data_dir = OUT / f"ui_pages_data_{args.n}_{os.getpid()}"
    init_data_dir(
        data_dir, hostnames=["localhost", "127.0.0.1"], port=port, database_url=args.database_url
    )
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    with transaction(context.sessions) as session:
        for name, role in ACCOUNTS.items():
            users.add_user(session, name, PASSWORD, role)
    context.close()
    print(f"loading {args.n:,} Patients ...", file=sys.stderr)
    load_seconds = load(data_dir, patients, args.batch)
    print(f"loaded in {load_seconds:.0f} s; reviewing ...", file=sys.stderr)
    reviewed = review_some(data_dir, args.seed)
    print("uploading and trying rules ...", file=sys.stderr)
    jobs = bulk_jobs(data_dir, extra, args.seed)
    return data_dir, {"load_seconds": round(load_seconds, 1), "reviewed": reviewed, **jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", "--reuse", type=Path, help="a registry to measure")
    parser.add_argument("--prepare", type=Path, help="build a registry to keep here, and stop")
    parser.add_argument("--no-rematch", action="store_true", help="--prepare: no dry run")
    parser.add_argument("--n", type=int, default=150_000, help="without --data-dir: records")
    parser.add_argument("--data", type=Path, default=OUT / "synthetic_150k.ndjson")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second offered")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", default="", help="postgresql://… (default SQLite)")
    parser.add_argument("--keep", action="store_true", help="keep a fresh data directory")
    parser.add_argument("--only", nargs="*", help="measure only these pages")
    parser.add_argument("--label", default="", help="a note stored with the result")
    parser.add_argument(
        "--upload", type=int, default=2000, help="Patients uploaded after a fresh load"
    )
    args = parser.parse_args()

    if args.prepare:
        done = prepare(args.prepare, args.data, args.database_url, args.seed, not args.no_rematch)
        persons, records = counts(args.prepare)
        print(
            json.dumps(
                {"prepared": str(args.prepare), "persons": persons, "records": records, **done}
            )
        )
        return
    loadavg_before = os.getloadavg()
    port = free_port()
    loaded: dict[str, Any] = {}
    if args.data_dir:
        data_dir = args.data_dir
    else:
        data_dir, loaded = fresh(args, port)
    server = None
    try:
        persons, records = counts(data_dir)
        compute_ms = dashboard_compute_ms(data_dir)
        data = inputs(data_dir, args.seed)
        jobs = loaded if "import" in loaded else latest_jobs(data_dir)
        data["import"], data["rematch"] = [jobs["import"]], [jobs["rematch"]]
        log_path = OUT / "ui_pages_server.log"
        server = start_server(data_dir, port, 1, log_path, None)
        base = f"https://127.0.0.1:{port}"
        wait_ready(server, base, data_dir / "certs", 1, log_path)
        tls = ssl.create_default_context(cafile=str(data_dir / "certs" / "ca.pem"))
        clients = {
            role: httpx.Client(verify=tls, timeout=60.0)
            for role in ("anonymous", "reviewer", "auditor", "admin")
        }
        results: dict[str, Any] = {}
        try:
            for name, role in ACCOUNTS.items():
                sign_in(clients[role.value], base, name)
            for name, kind in pages().items():
                if args.only and name not in args.only:
                    continue
                if kind.needs and not data[kind.needs][0]:
                    continue  # no such job in this registry (--prepare --no-rematch)
                results[name] = measure(
                    clients[kind.role],
                    base,
                    kind.page,
                    data,
                    args.requests,
                    args.warmup,
                    args.rate,
                    args.seed,
                )
                results[name]["role"] = kind.role
                results[name]["download"] = kind.download
                print(f"  {name}: {results[name]}", file=sys.stderr)
        finally:
            for http in clients.values():
                http.close()
    finally:
        if server is not None:
            server.stop()
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    timed = {k: r for k, r in results.items() if not r["download"]}
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": args.label,
        "database": "postgresql" if args.database_url or _is_postgres(data_dir) else "sqlite",
        "data_dir": str(data_dir),
        "records": records,
        "persons": persons,
        "loaded": {k: v for k, v in loaded.items() if k not in ("import", "rematch")},
        "dashboard_compute_ms": compute_ms,
        "requests": args.requests,
        "rate_per_second": args.rate,
        "target_p90_ms": TARGET_MS,
        "pages": results,
        "meets_target": all(r["p90_ms"] <= TARGET_MS for r in timed.values()),
        "over_target": sorted(k for k, r in timed.items() if r["p90_ms"] > TARGET_MS),
        "slowest_p90": max(timed.items(), key=lambda kv: kv[1]["p90_ms"])[0] if timed else None,
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    line = json.dumps(result)
    print(line)
    OUT.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")


def _is_postgres(data_dir: Path) -> bool:
    return load_settings(data_dir, environ={}).database.startswith("postgresql")


if __name__ == "__main__":
    main()
