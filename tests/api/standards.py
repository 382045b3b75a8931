"""Helpers of the standards tests (issue #11): FHIR calls over HTTPS on the shared servers of
``conftest.py``, and a reviewer account made with the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx
from registry_servers import CLI, FHIR_JSON, RegistryServer, id_system

JSON = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
PASSWORD = "correct horse battery staple 11"

__all__ = ["CLI", "id_system"]


def send(
    server: RegistryServer,
    system: str,
    method: str,
    url: str,
    resource: Any = None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """``method url`` as ``system``, with ``resource`` as FHIR JSON."""
    content = None if resource is None else json.dumps(resource)
    return server.client(system).request(
        method, url, content=content, headers={**JSON, **(headers or {})}, params=params
    )


def conditional_put(
    server: RegistryServer,
    system: str,
    patient: dict[str, Any],
    value: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """ITI-104: ``PUT Patient?identifier=<system's id system>|value``."""
    return send(
        server,
        system,
        "PUT",
        "/fhir/Patient",
        patient,
        headers=headers,
        params={"identifier": f"{id_system(system)}|{value}"},
    )


def pix(
    server: RegistryServer, system: str, source: str, *targets: str, **extra: str
) -> httpx.Response:
    """``GET Patient/$ihe-pix?sourceIdentifier=source[&targetSystem=…]`` as ``system``."""
    params: list[tuple[str, str]] = [("sourceIdentifier", source)]
    params += [("targetSystem", t) for t in targets]
    params += list(extra.items())
    return server.client(system).get(
        "/fhir/Patient/$ihe-pix", params=params, headers={"Accept": FHIR_JSON}
    )


def parameter_values(parameters: dict[str, Any], name: str) -> list[Any]:
    """The values of the ``name`` parameters of a Parameters resource."""
    out = []
    for item in parameters.get("parameter", []):
        if item["name"] == name:
            value = next(v for k, v in item.items() if k.startswith("value"))
            out.append(value)
    return out


def reviewer_token(server: RegistryServer, username: str, role: str = "reviewer") -> str:
    """A bearer token of a new account ``username`` (a reviewer unless told; made with
    ``users add``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CR_")}
    made = subprocess.run(
        [str(CLI), "users", "add", username, "--role", role, "--data-dir", str(server.data_dir)],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, (made.stdout, made.stderr)
    response = server.new_client().post(
        "/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
