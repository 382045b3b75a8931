"""Fixtures of the API tests: the real ``clientregistry serve`` over real HTTPS with mutual TLS.

``registry_server`` (one per backend for the session) runs on SQLite and, when
``CR_TEST_POSTGRES_URL`` is set (``postgresql://postgres@127.0.0.1:5432/test``), on a fresh
PostgreSQL database created for that server and dropped afterwards. Each server gets a data
directory made by ``init`` (CA, server and client certificates for openmrs, dhis2, lims) plus
three more systems: ``hie``, that may read demographics but not submit, ``kiosk``, that may
submit and nothing else, and ``steward``, that may merge. The server runs as a
subprocess on a free port; its log is attached to the report of every failing test that used
it.
"""

from __future__ import annotations

import contextlib
import random
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from registry_servers import (
    CLIENT_TAG_SYSTEM,
    FHIR_JSON,
    GOLDEN_CODE,
    FreshDatabase,
    RegistryServer,
    id_system,
    running_server,
)

from clientregistry.settings import ClientSystemConfig

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")]


@pytest.fixture(scope="session", params=BACKENDS)
def registry_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_database: FreshDatabase,
) -> Iterator[RegistryServer]:
    """A registry served over HTTPS, one per backend, shared by the test modules (they use
    identifiers and made-up people of their own, so they do not see each other's records).
    Tests that change the server itself (revoking certificates) start their own."""
    base = tmp_path_factory.mktemp(f"registry-{request.param}")
    with running_server(base, request.param, fresh_database) as server:
        yield server


@pytest.fixture(scope="module")
def launch_server(
    tmp_path_factory: pytest.TempPathFactory, fresh_database: FreshDatabase
) -> Iterator[Callable[..., RegistryServer]]:
    """Start servers of a module's own (``launch("postgresql", workers=3, env={…})``, and
    ``systems=`` to register more); they stop when the module ends. A PostgreSQL launch skips
    the test without CR_TEST_POSTGRES_URL."""
    with contextlib.ExitStack() as stack:

        def launch(
            backend: str,
            *,
            workers: int = 1,
            env: Mapping[str, str] | None = None,
            systems: tuple[ClientSystemConfig, ...] = (),
        ) -> RegistryServer:
            base = tmp_path_factory.mktemp(f"registry-{backend}-w{workers}")
            return stack.enter_context(
                running_server(
                    base, backend, fresh_database, workers=workers, env=env, systems=systems
                )
            )

        yield launch


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of the registry server(s) a failing test used to its report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, RegistryServer):
                tail = "\n".join(value.log().splitlines()[-200:])
                report.sections.append((f"registry server log ({value.backend})", tail))
    return report


# ----------------------------------------------------------------------------- FHIR helpers


class Fhir:
    """Small helpers shared by the API tests (exposed as the ``fhir`` fixture)."""

    golden_code = GOLDEN_CODE
    client_tag_system = CLIENT_TAG_SYSTEM

    def __init__(self) -> None:
        self._random = random.Random()

    def token(self, prefix: str = "") -> str:
        return prefix + uuid.uuid4().hex[:12]

    def _word(self) -> str:
        consonants, vowels = "bdfgklmnprstvz", "aeiou"
        letters = [self._random.choice(consonants if i % 2 == 0 else vowels) for i in range(8)]
        return "".join(letters).capitalize()

    def person(self) -> dict[str, Any]:
        """Demographics of a made-up person unlike any other (random names and birth date)."""
        birth = (
            f"{self._random.randint(1930, 2015)}-{self._random.randint(1, 12):02d}"
            f"-{self._random.randint(1, 28):02d}"
        )
        phone = "".join(self._random.choice(string.digits) for _ in range(9))
        return {
            "name": [{"use": "official", "family": self._word(), "given": [self._word()]}],
            "gender": self._random.choice(["male", "female"]),
            "birthDate": birth,
            "telecom": [{"system": "phone", "value": phone}],
        }

    def patient(
        self,
        system: str,
        value: str | None = None,
        demographics: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A Patient with ``system``'s internal identifier (``value``, random when None)."""
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": id_system(system), "value": value or self.token()}],
        }
        patient.update(demographics if demographics is not None else self.person())
        patient.update(fields)
        return patient

    @staticmethod
    def outcome(
        response: httpx.Response,
        status: int,
        code: str | None = None,
        expression: str | None = None,
    ) -> dict[str, Any]:
        """Assert ``response`` is an OperationOutcome with ``status`` (and the issue code and
        FHIRPath expression, when given); return it."""
        assert response.status_code == status, (response.status_code, response.text)
        assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
        body: dict[str, Any] = response.json()
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"], body
        assert all(issue["severity"] in ("fatal", "error") for issue in body["issue"]), body
        if code is not None:
            assert body["issue"][0]["code"] == code, body
        if expression is not None:
            expressions = [e for issue in body["issue"] for e in issue.get("expression", [])]
            assert expression in expressions, body
        return body

    @staticmethod
    def ids(response: httpx.Response) -> tuple[str, str]:
        """(source record id, golden record id) from ``Location`` and ``LocationCRUID``."""
        location = response.headers["Location"]
        cruid = response.headers["LocationCRUID"]
        assert location.startswith("Patient/"), location
        assert cruid.startswith("Patient/"), cruid
        return location.removeprefix("Patient/"), cruid.removeprefix("Patient/")

    @staticmethod
    def tags(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(resource.get("meta", {}).get("tag", []))

    @staticmethod
    def links(resource: Mapping[str, Any], kind: str | None = None) -> list[str]:
        """References of ``resource.link`` (of type ``kind`` when given)."""
        return [
            link["other"]["reference"]
            for link in resource.get("link", [])
            if kind is None or link["type"] == kind
        ]


@pytest.fixture(scope="session")
def fhir() -> Fhir:
    return Fhir()
