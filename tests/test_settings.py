"""Settings: the TOML file ``init`` writes, its defaults and ``CR_…`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from clientregistry.errors import ConfigError
from clientregistry.settings import CONFIG_FILE, ClientSystemConfig, load_settings, render_config

SYSTEM = ClientSystemConfig("openmrs", "OpenMRS", "http://clientregistry.org/openmrs")


def _write(tmp_path: Path, text: str | None = None) -> Path:
    if text is None:
        text = render_config(hostnames=["localhost"], systems=[SYSTEM])
    (tmp_path / CONFIG_FILE).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_written_file_loads_with_its_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path), environ={})
    assert settings.port == 3000
    assert settings.access_log is False
    assert settings.systems["openmrs"].internal_id_system == "http://clientregistry.org/openmrs"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("YES", True)])
def test_the_access_log_can_be_switched_by_environment(
    tmp_path: Path, raw: str, expected: bool
) -> None:
    settings = load_settings(_write(tmp_path), environ={"CR_SERVER_ACCESS_LOG": raw})
    assert settings.access_log is expected


def test_a_wrong_access_log_value_is_named(tmp_path: Path) -> None:
    text = render_config(hostnames=["localhost"], systems=[SYSTEM]).replace(
        "access_log = false", 'access_log = "often"'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert [p.location for p in caught.value.problems] == ["access_log"]
    assert "'often'" in str(caught.value)


def test_postgresql_writes_run_on_the_loop_unless_configured(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path), environ={}).writes_in_thread_pool is False
    switched = load_settings(
        _write(tmp_path), environ={"CR_DATABASE_WRITES_IN_THREAD_POOL": "true"}
    )
    assert switched.writes_in_thread_pool is True
    text = render_config(hostnames=["localhost"], systems=[SYSTEM]).replace(
        "writes_in_thread_pool = false", 'writes_in_thread_pool = "sometimes"'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert [p.location for p in caught.value.problems] == ["writes_in_thread_pool"]


def test_no_proxy_is_trusted_unless_configured(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path), environ={})
    assert settings.trusted_proxies == ()
    assert settings.proxy_client_header == "x-openhim-clientid"
    text = render_config(hostnames=["localhost"], systems=[SYSTEM]).replace(
        "trusted_addresses = []", 'trusted_addresses = ["127.0.0.2", "10.1.0.0/16", "::1"]'
    )
    configured = load_settings(_write(tmp_path, text), environ={})
    assert [str(n) for n in configured.trusted_proxies] == [
        "127.0.0.2/32",
        "10.1.0.0/16",
        "::1/128",
    ]
    from_env = load_settings(
        _write(tmp_path),
        environ={
            "CR_PROXY_TRUSTED_ADDRESSES": "192.0.2.7, 192.0.2.8",
            "CR_PROXY_CLIENT_HEADER": "X-Client",
        },
    )
    assert [str(n) for n in from_env.trusted_proxies] == ["192.0.2.7/32", "192.0.2.8/32"]
    assert from_env.proxy_client_header == "x-client"


def test_a_wrong_proxy_setting_is_named(tmp_path: Path) -> None:
    text = (
        render_config(hostnames=["localhost"], systems=[SYSTEM])
        .replace("trusted_addresses = []", 'trusted_addresses = ["nginx.local", "10.0.0.1"]')
        .replace('client_header = "x-openhim-clientid"', 'client_header = "x client"')
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert [p.location for p in caught.value.problems] == [
        "proxy.trusted_addresses",
        "proxy.client_header",
    ]
    assert "'nginx.local'" in str(caught.value) and "'x client'" in str(caught.value)


def test_the_server_listens_on_this_machine_only_by_default(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path), environ={}).host == "127.0.0.1"
    opened = load_settings(_write(tmp_path), environ={"CR_SERVER_HOST": "0.0.0.0"})
    assert opened.host == "0.0.0.0"


def test_two_systems_with_one_internal_identifier_system_are_refused(tmp_path: Path) -> None:
    twin = ClientSystemConfig("openmrs2", "OpenMRS 2", SYSTEM.internal_id_system)
    text = render_config(hostnames=["localhost"], systems=[SYSTEM, twin])
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    [problem] = caught.value.problems
    assert problem.location == "systems.openmrs2.internal_id_system"
    assert "already the internal identifier system of systems.openmrs" in problem.message


@pytest.mark.parametrize("permissions", ['"submit"', "[1, 2]"])
def test_permissions_must_be_a_list_of_names(tmp_path: Path, permissions: str) -> None:
    text = render_config(hostnames=["localhost"], systems=[SYSTEM]).replace(
        'permissions = ["submit", "read-identifiers"]', f"permissions = {permissions}"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert [p.location for p in caught.value.problems] == ["systems.openmrs.permissions"]
