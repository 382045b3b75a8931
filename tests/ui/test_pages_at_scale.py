"""What keeps the web UI's pages fast on a large registry, on SQLite and PostgreSQL: the audit
trail read by keyset (its pager's links follow the last entry shown, so the thousandth page
costs what the first does), its total counted up to a bound ("more than"), and its filter of
failures read from their own partial index.

The speed itself is measured by ``bench/ui_pages.py``; these tests hold the behaviour."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from clientregistry.api.app import create_app
from clientregistry.registry import audit_trail
from clientregistry.registry.actor import Actor, Reading, audit_in, audit_refusal
from clientregistry.registry.audit_trail import AuditQuery
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.security import passwords, users
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import Role
from clientregistry.ui import routes_admin

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PASSWORD = "a password for the tests"
SEARCHES = 130
FAILURES = 7
OTTO = Actor("otto", Role.AUDITOR, "127.0.0.1")


class Registry:
    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self.app = create_app(context)

    def auditor(self) -> TestClient:
        client = TestClient(self.app, base_url="https://testserver", follow_redirects=False)
        page = client.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        form = {"username": "otto", "password": PASSWORD, "login_token": token.group(1)}
        assert client.post("/ui/login", data=form).status_code == 303
        return client


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fresh_database: Any
) -> Iterator[Registry]:
    with pytest.MonkeyPatch.context() as patch, fresh_database(request.param) as url:
        patch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        data_dir: Path = tmp_path_factory.mktemp("scale") / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        try:
            with transaction(context.sessions) as session:
                users.add_user(session, "otto", PASSWORD, Role.AUDITOR)
                rita = Actor("rita", Role.REVIEWER, "127.0.0.1")
                for i in range(SEARCHES):
                    audit_in(session, rita, Reading("people-search", detail={"found": i}))
            for _ in range(FAILURES):
                audit_refusal(context, rita, Reading("access-denied"))
            yield Registry(context)
        finally:
            context.close()


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/ui/audit/(\d+)">', html)]


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_audit_pager_follows_the_last_entry_shown(registry: Registry) -> None:
    everything = audit_trail.audit_page(
        registry.context, OTTO, AuditQuery(event_type="people-search"), 0, 1000
    )
    expected = [item.id for item in everything.items]
    assert len(expected) == SEARCHES and expected == sorted(expected, reverse=True)
    client = registry.auditor()
    url: str | None = "/ui/audit?event_type=people-search"
    pages: list[list[int]] = []
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200, page.text[:500]
        pages.append(_ids(page.text))
        if len(pages) > 1:
            assert "before=" in url  # a keyset link, not an offset to skip
        url = _link(page.text, "next")
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [i for p in pages for i in p] == expected
    assert "101–130 of 130" in page.text
    back = _link(page.text, "prev")
    assert back is not None and "after=" in back
    assert _ids(client.get(back).text) == pages[1]


def test_the_audit_total_is_counted_up_to_a_bound(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_admin, "COUNT_LIMIT", 100)
    client = registry.auditor()
    first = client.get("/ui/audit?event_type=people-search")
    assert "More than 100 entries" in first.text and "1–50 of more than 100" in first.text
    second = client.get(_link(first.text, "next") or "")
    third = client.get(_link(second.text, "next") or "")
    assert len(_ids(third.text)) == SEARCHES - 100  # the last page, found past the bound
    assert _link(third.text, "next") is None
    bounded = audit_trail.audit_page(
        registry.context, OTTO, AuditQuery(event_type="people-search"), 0, 10, count_limit=100
    )
    assert (bounded.total, bounded.total_capped) == (100, True)
    exact = audit_trail.audit_page(
        registry.context, OTTO, AuditQuery(event_type="people-search"), 0, 10
    )
    assert (exact.total, exact.total_capped) == (SEARCHES, False)  # the admin API's count


def test_the_failures_filter_lists_failures_only(registry: Registry) -> None:
    client = registry.auditor()
    failures = client.get("/ui/audit?outcome=4")
    assert failures.status_code == 200
    assert f"{FAILURES} entries" in failures.text
    found = audit_trail.audit_page(registry.context, OTTO, AuditQuery(outcome=4), 0, 50)
    assert found.total == FAILURES and {i.outcome for i in found.items} == {4}
    assert {i.event_type for i in found.items} == {"access-denied"}
    successes = audit_trail.audit_page(registry.context, OTTO, AuditQuery(outcome=0), 0, 500)
    assert successes.total >= SEARCHES and {i.outcome for i in successes.items} == {0}


def _plan(registry: Registry, sql: str) -> str:
    with registry.context.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
            return " | ".join(str(row[-1]) for row in rows)
        connection.execute(text("SET enable_seqscan = off"))  # a small table: force the choice
        return " | ".join(row[0] for row in connection.execute(text("EXPLAIN " + sql)).all())


def test_the_audit_filters_read_their_indexes(registry: Registry) -> None:
    failures = _plan(
        registry,
        "SELECT id FROM audit_event WHERE outcome = 4 AND outcome != 0 ORDER BY id DESC LIMIT 50",
    )
    assert "ix_audit_event_failures" in failures, failures
    kinds = _plan(
        registry,
        "SELECT id FROM audit_event WHERE event_type = 'login' AND id < 100 "
        "ORDER BY id DESC LIMIT 50",
    )
    assert "ix_audit_event_event_type" in kinds, kinds


def test_a_days_range_lists_the_same_entries_newest_first(registry: Registry) -> None:
    from datetime import UTC, datetime, time, timedelta

    today = datetime.now(UTC).date()
    start = datetime.combine(today, time.min, UTC)
    query = AuditQuery(since=start, until=start + timedelta(days=1))
    ranged = audit_trail.audit_page(registry.context, OTTO, query, 0, 40, count_limit=100)
    everything = audit_trail.audit_page(registry.context, OTTO, AuditQuery(), 0, 41)
    older = everything.items[1:]  # the first: the ranged page's own read, audited after it
    assert [i.id for i in ranged.items] == [i.id for i in older]
    assert [i.event_type for i in ranged.items] == [i.event_type for i in older]
    assert ranged.total_capped and ranged.total == 100
    page = registry.auditor().get(f"/ui/audit?since={today}&until={today}")
    assert page.status_code == 200 and "More than 10,000" not in page.text
    assert len(_ids(page.text)) == 50


def test_a_days_range_is_paged_by_time_recorded(registry: Registry) -> None:
    """With a time range the trail is read newest first by time recorded (the range's index
    in order); its pager's links follow the last entry shown all the same."""
    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    client = registry.auditor()
    url: str | None = f"/ui/audit?event_type=people-search&since={today}&until={today}"
    pages: list[list[int]] = []
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200, page.text[:500]
        pages.append(_ids(page.text))
        url = _link(page.text, "next")
    everything = audit_trail.audit_page(
        registry.context, OTTO, AuditQuery(event_type="people-search"), 0, 1000
    )
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [i for p in pages for i in p] == [item.id for item in everything.items]
    back = _link(page.text, "prev")
    assert back is not None and _ids(client.get(back).text) == pages[1]
    moments = [item.recorded for item in everything.items]
    assert moments == sorted(moments, reverse=True)
