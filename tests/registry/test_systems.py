"""Client systems in the database: import from config.toml, permission changes, and the
watcher that brings another process's change into a running registry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from clientregistry.registry import systems
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import add_system_to_config, init_data_dir
from clientregistry.settings import ClientSystemConfig, load_settings
from clientregistry.store.db import transaction

EMR = ClientSystemConfig("emr4", "EMR 4", "http://example.org/emr4")
OPENMRS_URI = "http://clientregistry.org/openmrs"


@pytest.fixture(params=["sqlite", "postgresql"])
def data_dir(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[Path]:
    with fresh_database(request.param) as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        yield tmp_path / "data"


@pytest.fixture
def context(data_dir: Path) -> Iterator[RegistryContext]:
    context = RegistryContext.open(load_settings(data_dir, environ={}), serving=True)
    yield context
    context.close()


def test_init_stores_the_demo_systems_in_the_database(context: RegistryContext) -> None:
    assert sorted(context.settings.systems) == ["dhis2", "lims", "openmrs"]
    assert context.settings.systems["lims"].permissions == ("submit", "read-identifiers")
    with transaction(context.sessions, write=False) as session:
        stored = {s.config.name: s for s in systems.stored_systems(session)}
    assert all(s.cert_serial for s in stored.values())
    assert not any(s.revoked for s in stored.values())


def test_configured_systems_the_database_lacks_are_imported(data_dir: Path) -> None:
    add_system_to_config(data_dir, EMR)
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        assert context.settings.systems["emr4"] == EMR
        assert EMR.internal_id_system in context.matcher.extractor.record_id_systems
    finally:
        context.close()


def test_a_configured_system_that_differs_is_reported_and_the_database_wins(
    context: RegistryContext,
) -> None:
    changed = ClientSystemConfig(
        "lims", "Lab Information Management System", "http://clientregistry.org/lims",
        ("submit", "read-demographics"),
    )  # fmt: skip
    with transaction(context.sessions) as session:
        warnings = systems.import_configured(session, [changed])
    assert len(warnings) == 1
    assert "[systems.lims]" in warnings[0] and "permissions" in warnings[0]
    with transaction(context.sessions, write=False) as session:
        assert systems.stored_permissions(session, "lims") == ("submit", "read-identifiers")


def test_grant_and_revoke_permission(context: RegistryContext) -> None:
    with transaction(context.sessions) as session:
        before = systems.grant(session, "lims", "read-demographics")
        assert before == ("submit", "read-identifiers")
        assert systems.stored_permissions(session, "lims") == (
            "submit",
            "read-identifiers",
            "read-demographics",
        )
    with transaction(context.sessions) as session:
        systems.revoke_permission(session, "lims", "submit")
        assert systems.stored_permissions(session, "lims") == (
            "read-identifiers",
            "read-demographics",
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: systems.grant(s, "nobody", "submit"), "no client system 'nobody'"),
        (lambda s: systems.grant(s, "lims", "delete"), "unknown permission 'delete'"),
        (
            lambda s: systems.revoke_permission(s, "lims", "read-demographics"),
            "does not hold 'read-demographics'",
        ),
        (
            lambda s: systems.add_system(s, ClientSystemConfig("emr5", "EMR 5", OPENMRS_URI)),
            "already belongs to system 'openmrs'",
        ),
        (
            lambda s: systems.add_system(s, ClientSystemConfig("lims", "x", "http://x.org/x")),
            "exists already",
        ),
    ],
)
def test_refused_changes_name_the_problem_and_change_nothing(
    context: RegistryContext, change: Callable[..., object], message: str
) -> None:
    with transaction(context.sessions, write=False) as session:
        stamp = systems.change_stamp(session)
    with pytest.raises(systems.SystemRefused) as caught, transaction(context.sessions) as session:
        change(session)
    assert message in caught.value.message
    with transaction(context.sessions, write=False) as session:
        assert systems.change_stamp(session) == stamp


def test_the_watcher_brings_in_a_change_made_elsewhere(context: RegistryContext) -> None:
    watcher = context.systems_watcher
    assert watcher is not None
    assert watcher.check() is False  # nothing changed since the context opened
    with transaction(context.sessions) as session:  # as `clientregistry systems grant` does
        systems.grant(session, "dhis2", "read-demographics")
        systems.add_system(session, EMR)
    assert "emr4" not in context.settings.systems
    assert watcher.check() is True
    assert context.settings.systems["emr4"] == EMR
    assert "read-demographics" in context.settings.systems["dhis2"].permissions
    assert EMR.internal_id_system in context.matcher.extractor.record_id_systems
    assert EMR.internal_id_system in context.settings.record_id_systems
    assert watcher.check() is False


def test_every_change_moves_the_stamp(context: RegistryContext) -> None:
    seen = set()
    for change in (
        lambda s: systems.add_system(s, EMR),
        lambda s: systems.grant(s, "emr4", "read-demographics"),
        lambda s: systems.revoke_permission(s, "emr4", "read-demographics"),
        lambda s: systems.record_certificate(s, "emr4", 0xABC, revoked=False),
        lambda s: systems.record_certificate(s, "emr4", 0xABC, revoked=True),
    ):
        with transaction(context.sessions) as session:
            change(session)
            seen.add(systems.change_stamp(session))
    assert len(seen) == 5


def test_the_watcher_thread_runs_while_the_registry_serves(context: RegistryContext) -> None:
    context.start()
    with transaction(context.sessions) as session:
        systems.add_system(session, EMR)
    deadline = time.monotonic() + 5
    while "emr4" not in context.settings.systems and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "emr4" in context.settings.systems
