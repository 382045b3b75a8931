"""The web UI's page times at 100,000 persons: every page a data manager opens, over HTTPS.

``python bench/ui_pages.py [--n N] [--data PATH] [--requests R] [--rate HZ]`` does:

1. ``init_data_dir`` a fresh SQLite data directory under ``bench/out/`` (``--database-url``
   for PostgreSQL), adds a reviewer and an admin account;
2. loads the first N Patients of the data set (default ``bench/out/synthetic_150k.ndjson``:
   150,000 records of about 102,000 persons; ``python bench/datasets.py synthetic --n
   150000`` writes it) in process with ``Submitter.submit`` (the real submit path), half as
   openmrs and half as dhis2; then, as a reviewer would, resolves 200 review items, breaks
   out 50 records and reverts 20 of those breaks, so that queues, histories and the audit
   trail hold what they hold in use; then, as an admin would, uploads the next ``--upload``
   Patients (an NDJSON file, through the import job use case) and tries a stricter copy of
   the rules in a dry-run re-match, for the upload and rules pages;
3. starts ``clientregistry serve`` (one worker), signs in through ``/ui/login`` with an
   HTTPS client without a certificate (as a browser), and requests every page kind R
   times at a fixed offered rate (``--rate`` per second, one request in flight: the time
   of one page, not of a queue of them) after a warm-up; inputs (names, birth dates,
   identifiers, persons, review items) are drawn at random with a fixed seed;
4. prints one JSON line (p50/p90/p99/max per page, statuses, persons, records, load rate,
   machine load) and appends it to ``bench/out/ui_pages_results.jsonl``. The target: every
   page's p90 under 200 ms.

The dashboard's figures are cached for 15 s per process; ``dashboard-cold`` measures it with
the cache emptied (``?days=`` cycling through periods not asked for in the last 15 s: each
request computes the figures).

Not a test: run on demand (inside ``flock /work/.bench.lock`` on a shared machine); the
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
import sys
import time
from collections.abc import Callable
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
from clientregistry.store.models import GoldenRecord, MatchIssue, SourceRecord

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "ui_pages_results.jsonl"
SYSTEMS = {
    "openmrs": "http://clientregistry.org/openmrs",
    "dhis2": "http://clientregistry.org/dhis2",
}
PASSWORD = "a benchmark password"
TARGET_MS = 200.0


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

    from clientregistry.registry import imports, rematch, rules_store, rules_view

    settings = load_settings(data_dir, environ={})
    context = RegistryContext.open(settings)
    ada = Actor("ada", Role.ADMIN, "127.0.0.1")
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
        document = rules_view.rules_view(context, ada).document
        document["rules"][0]["autoMatchThreshold"] += 1.0
        version = rules_store.store_rules(context, ada, orjson.dumps(document), "bench")
        started = time.perf_counter()
        rematch_id = rematch.start_rematch(
            context, ada, version.id, dry_run=True, origin=JobOrigin.SERVER
        )
        rematch.run_rematch(context, rematch_id, reload_wait=0)
        timings["dry_run_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        context.close()
    return {"import": job.job_id, "rematch": rematch_id, "timings": timings}


def sign_in(http: httpx.Client, base: str, username: str) -> None:
    page = http.get(f"{base}/ui/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    answer = http.post(
        f"{base}/ui/login",
        data={"username": username, "password": PASSWORD, "login_token": token.group(1)},
    )
    assert answer.status_code in (200, 303) and "cr_session" in http.cookies, answer.text[:500]


def inputs(data_dir: Path, patients: list[dict[str, Any]], seed: int) -> dict[str, list[Any]]:
    settings = load_settings(data_dir, environ={})
    context = RegistryContext.open(settings)
    rng = random.Random(seed)
    try:
        with transaction(context.sessions, write=False) as session:
            goldens = list(
                session.scalars(
                    GoldenRecord.__table__.select()
                    .with_only_columns(GoldenRecord.id)
                    .where(GoldenRecord.active.is_(True))
                    .limit(20000)
                )
            )
            issues = list(
                session.scalars(
                    MatchIssue.__table__.select()
                    .with_only_columns(MatchIssue.id)
                    .where(
                        MatchIssue.status == IssueStatus.OPEN,
                        MatchIssue.kind == IssueKind.POTENTIAL,
                    )
                    .limit(5000)
                )
            )
            records = list(
                session.scalars(
                    SourceRecord.__table__.select().with_only_columns(SourceRecord.id).limit(20000)
                )
            )
    finally:
        context.close()
    named = [p for p in patients if p.get("name") and p.get("birthDate")]
    return {
        "names": [
            f"{' '.join(p['name'][0].get('given', [])[:1])} {p['name'][0].get('family', '')}"
            for p in rng.sample(named, 500)
        ],
        "birth_dates": [p["birthDate"] for p in rng.sample(named, 500)],
        "identifiers": [p["id"] for p in rng.sample(patients, 500)],
        "goldens": rng.sample(goldens, min(500, len(goldens))),
        "issues": rng.sample(issues, min(500, len(issues))) if issues else [],
        "records": rng.sample(records, min(1000, len(records))),
    }


Page = Callable[[httpx.Client, str, random.Random, dict[str, list[Any]]], httpx.Response]


def pages(anonymous: httpx.Client) -> dict[str, Page]:
    def get(path: str) -> Page:
        return lambda http, base, rng, data: http.get(f"{base}{path}")

    def csrf(http: httpx.Client, base: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', http.get(f"{base}/ui/account").text)
        assert found is not None
        return found.group(1)

    cycle = iter(range(10**9))

    def dashboard_cold(
        http: httpx.Client, base: str, rng: random.Random, data: Any
    ) -> httpx.Response:
        # a period not asked for in the last 15 s: the figures are computed for this request
        return http.get(f"{base}/ui/?days={(7, 30, 90, 365)[next(cycle) % 4]}")

    token: dict[str, str] = {}

    def pair(http: httpx.Client, base: str, rng: random.Random, data: Any) -> httpx.Response:
        if "csrf" not in token:
            token["csrf"] = csrf(http, base)
        left, right = rng.sample(data["records"], 2)
        form = {"csrf_token": token["csrf"], "left_record": left, "right_record": right}
        return http.post(f"{base}/ui/rules/test", data=form)

    return {
        "login": lambda http, base, rng, data: anonymous.get(f"{base}/ui/login"),
        "dashboard": get("/ui/"),
        "dashboard-cold": dashboard_cold,
        "find-by-name": lambda http, base, rng, data: http.get(
            f"{base}/ui/people", params={"name": rng.choice(data["names"])}
        ),
        "find-by-birth-date": lambda http, base, rng, data: http.get(
            f"{base}/ui/people", params={"birth_date": rng.choice(data["birth_dates"])}
        ),
        "find-by-identifier": lambda http, base, rng, data: http.get(
            f"{base}/ui/people", params={"identifier": rng.choice(data["identifiers"])}
        ),
        "find-by-name-and-system": lambda http, base, rng, data: http.get(
            f"{base}/ui/people", params={"name": rng.choice(data["names"]), "system": "dhis2"}
        ),
        "person": lambda http, base, rng, data: http.get(
            f"{base}/ui/people/{rng.choice(data['goldens'])}"
        ),
        "review-overview": get("/ui/review"),
        "potential-queue": get("/ui/review/potential"),
        "auto-queue": get("/ui/review/auto"),
        "review-item": lambda http, base, rng, data: http.get(
            f"{base}/ui/review/items/{rng.choice(data['issues'] or [0])}"
        ),
        "rules": get("/ui/rules"),
        "pair-test": pair,
        "audit": get("/ui/audit"),
        "audit-by-person": lambda http, base, rng, data: http.get(
            f"{base}/ui/audit", params={"person": rng.choice(data["goldens"])}
        ),
        "users": get("/ui/users"),
        "account": get("/ui/account"),
        "uploads": get("/ui/imports"),
        "upload-report": lambda http, base, rng, data: http.get(
            f"{base}/ui/imports/{data['import'][0]}"
        ),
        "upload-progress": lambda http, base, rng, data: http.get(
            f"{base}/ui/imports/{data['import'][0]}/progress"
        ),
        "upload-report-csv": lambda http, base, rng, data: http.get(
            f"{base}/ui/imports/{data['import'][0]}/report.csv"
        ),
        "rules-edit": get("/ui/rules/edit"),
        "rules-versions": get("/ui/rules/versions"),
        "rules-dry-run": lambda http, base, rng, data: http.get(
            f"{base}/ui/rules/rematches/{data['rematch'][0]}"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=150_000)
    parser.add_argument("--data", type=Path, default=OUT / "synthetic_150k.ndjson")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second offered")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", default="", help="postgresql://… (default SQLite)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--reuse", type=Path, help="a data directory kept by --keep")
    parser.add_argument("--only", nargs="*", help="measure only these pages")
    parser.add_argument(
        "--upload", type=int, default=2000, help="Patients uploaded after the load (an import)"
    )
    args = parser.parse_args()

    read = read_patients(args.data, args.n + args.upload)
    patients, extra = read[: args.n], read[args.n :]
    port = free_port()
    load_seconds = float("nan")
    reviewed: dict[str, int] = {}
    jobs: dict[str, Any] = {}
    if args.reuse:
        data_dir = args.reuse
    else:
        data_dir = OUT / f"ui_pages_data_{args.n}_{os.getpid()}"
        init_data_dir(
            data_dir,
            hostnames=["localhost", "127.0.0.1"],
            port=port,
            database_url=args.database_url,
        )
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        with transaction(context.sessions) as session:
            users.add_user(session, "rita", PASSWORD, Role.REVIEWER)
            users.add_user(session, "ada", PASSWORD, Role.ADMIN)
        context.close()
    server = None
    try:
        if not args.reuse:
            print(f"loading {args.n:,} Patients ...", file=sys.stderr)
            load_seconds = load(data_dir, patients, args.batch)
            print(f"loaded in {load_seconds:.0f} s; reviewing ...", file=sys.stderr)
            reviewed = review_some(data_dir, args.seed)
            print("uploading and trying rules ...", file=sys.stderr)
            jobs = bulk_jobs(data_dir, extra, args.seed)
        persons, records = counts(data_dir)
        data = inputs(data_dir, patients, args.seed)
        if not jobs:
            jobs = latest_jobs(data_dir)
        data["import"], data["rematch"] = [jobs["import"]], [jobs["rematch"]]
        log_path = OUT / "ui_pages_server.log"
        server = start_server(data_dir, port, 1, log_path, None)
        base = f"https://127.0.0.1:{port}"
        wait_ready(server, base, data_dir / "certs", 1, log_path)
        context = ssl.create_default_context(cafile=str(data_dir / "certs" / "ca.pem"))
        results: dict[str, Any] = {}
        with (
            httpx.Client(verify=context, timeout=60.0) as http,
            httpx.Client(verify=context, timeout=60.0) as anonymous,
        ):
            sign_in(http, base, "ada")
            for name, page in pages(anonymous).items():
                if args.only and name not in args.only:
                    continue
                results[name] = measure(
                    http, base, page, data, args.requests, args.warmup, args.rate, args.seed
                )
                print(f"  {name}: {results[name]}", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        if not args.keep and not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "database": "postgresql" if args.database_url else "sqlite",
        "records": records,
        "persons": persons,
        "data": args.data.name,
        "load_seconds": round(load_seconds, 1),
        "reviewed": reviewed,
        "bulk_jobs": jobs.get("timings"),
        "rate_per_second": args.rate,
        "target_p90_ms": TARGET_MS,
        "pages": results,
        "meets_target": all(r["p90_ms"] <= TARGET_MS for r in results.values()),
        "slowest_p90": max(results.items(), key=lambda kv: kv[1]["p90_ms"])[0] if results else None,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    line = json.dumps(result)
    print(line)
    OUT.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
