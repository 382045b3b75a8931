"""Issue #11 item 10: URLs never come from an untrusted ``Host`` header.

``fullUrl``, paging links, ``Content-Location`` and the CapabilityStatement use the configured
public base URL (``server.base_url``, ``CR_SERVER_BASE_URL``; by default
``https://<first hostname>:<port>``), so a forged ``Host`` cannot send a client's next
request, with its certificate, elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from standards import send

from clientregistry.errors import ConfigError
from clientregistry.settings import ClientSystemConfig, load_settings, render_config

FORGED = {"Host": "attacker.example:443", "X-Forwarded-Host": "attacker.example"}


def urls_of(server, fhir, headers) -> list[str]:
    """Every URL the FHIR API writes, asked for with ``headers``."""
    client = server.client("hie")
    urls = []
    metadata = client.get("/fhir/metadata", headers=headers).json()
    urls.append(metadata["implementation"]["url"])
    created = send(
        server, "openmrs", "POST", "/fhir/Patient", fhir.patient("openmrs"), headers=headers
    )
    urls.append(created.headers["Content-Location"])
    record_id, _ = fhir.ids(created)
    assert server.submit("dhis2", fhir.patient("dhis2")).status_code == 201
    page = client.get("/fhir/Patient", params={"_count": "1"}, headers=headers).json()
    assert [link["relation"] for link in page["link"]] == ["self", "next"]
    urls += [link["url"] for link in page["link"]]
    urls += [entry["fullUrl"] for entry in page["entry"]]
    history = client.get(f"/fhir/Patient/{record_id}/_history", headers=headers).json()
    urls += [entry["fullUrl"] for entry in history["entry"]]
    return urls


def test_a_forged_host_changes_no_url(registry_server, fhir) -> None:
    base = f"{registry_server.base_url}/fhir"
    urls = urls_of(registry_server, fhir, FORGED)
    assert len(urls) >= 6
    assert all(url.startswith(f"{base}/") or url == base for url in urls), urls
    assert not any("attacker" in url for url in urls)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_configured_base_url_is_used(launch_server, fhir, backend: str) -> None:
    public = "https://cr.example.org/registry"
    server = launch_server(backend, env={"CR_SERVER_BASE_URL": public})
    urls = urls_of(server, fhir, FORGED)
    assert all(url.startswith(f"{public}/fhir") for url in urls), urls


SYSTEM = ClientSystemConfig("openmrs", "OpenMRS", "http://clientregistry.org/openmrs")


def _settings(tmp_path: Path, text: str | None = None, **environ: str):
    config = text or render_config(hostnames=["cr.local", "10.0.0.5"], systems=[SYSTEM], port=3443)
    (tmp_path / "config.toml").write_text(config, encoding="utf-8")
    return load_settings(tmp_path, environ=environ)


def test_the_default_is_the_first_hostname_and_port(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.public_base_url == "https://cr.local:3443"
    assert settings.fhir_base == "https://cr.local:3443/fhir"
    assert '# base_url = "https://cr.local:3443"' in (tmp_path / "config.toml").read_text()


def test_the_environment_overrides_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, CR_SERVER_BASE_URL="https://mpi.example.org/")
    assert settings.fhir_base == "https://mpi.example.org/fhir"


@pytest.mark.parametrize(
    "bad", ["mpi.example.org", "ftp://mpi.example.org", "https://x/?a=1", "https:///fhir"]
)
def test_a_bad_base_url_is_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, CR_SERVER_BASE_URL=bad)
    assert [p.location for p in caught.value.problems] == ["base_url"]
