"""Errors over HTTPS: each an OperationOutcome with the right status, and nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select

from clientregistry.store.models import GoldenRecord, SourceRecord, SourceRecordVersion

FHIR = "application/fhir+json"
LIMIT = 1_048_576  # max_body_bytes written by init


@pytest.fixture
def store_counts(registry_server) -> Iterator[Callable[[], tuple[int, ...]]]:
    """Counts of stored records, versions and golden records."""
    engine = registry_server.engine()

    def counts() -> tuple[int, ...]:
        with engine.connect() as connection:
            return tuple(
                connection.scalar(select(func.count()).select_from(model))
                for model in (SourceRecord, SourceRecordVersion, GoldenRecord)
            )

    yield counts
    engine.dispose()


def invalid_bodies(fhir) -> list[tuple[str, bytes, str, int, str, str | None]]:
    """(case, body, content type, status, issue code, expression) of refused submissions."""

    def patient(**fields: object) -> bytes:
        return json.dumps(fhir.patient("openmrs", fhir.token("err-"), **fields)).encode()

    big = fhir.patient("openmrs", fhir.token("err-"))
    big["text"] = {"status": "generated", "div": "<div>" + "x" * LIMIT + "</div>"}
    return [
        ("malformed JSON", b'{"resourceType": "Patient", ', FHIR, 400, "structure", None),
        ("not an object", b'["Patient"]', FHIR, 400, "structure", None),
        (
            "wrong resourceType",
            json.dumps({**fhir.patient("openmrs"), "resourceType": "Observation"}).encode(),
            FHIR,
            400,
            "invalid",
            None,
        ),
        ("invalid gender", patient(gender="man"), FHIR, 400, "value", "Patient.gender"),
        ("invalid date", patient(birthDate="1990-02-30"), FHIR, 400, "value", "Patient.birthDate"),
        (
            "unknown element",
            patient(nickname="Bob"),
            FHIR,
            400,
            None,
            None,
        ),
        (
            "no identifier of the caller",
            json.dumps(fhir.patient("dhis2")).encode(),
            FHIR,
            422,
            "business-rule",
            "Patient.identifier",
        ),
        (
            "two identifiers of the caller",
            json.dumps(
                fhir.patient(
                    "openmrs",
                    identifier=[
                        {"system": "http://clientregistry.org/openmrs", "value": fhir.token()},
                        {"system": "http://clientregistry.org/openmrs", "value": fhir.token()},
                    ],
                )
            ).encode(),
            FHIR,
            422,
            "business-rule",
            "Patient.identifier",
        ),
        ("over the size limit", json.dumps(big).encode(), FHIR, 413, "too-costly", None),
        ("text/plain", patient(), "text/plain", 415, "not-supported", None),
        ("no content type", patient(), "", 415, "not-supported", None),
    ]


def test_refused_submissions(registry_server, fhir, store_counts) -> None:
    client = registry_server.client("openmrs")
    before = store_counts()
    for case, body, content_type, status, code, expression in invalid_bodies(fhir):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/fhir/Patient", content=body, headers=headers)
        try:
            fhir.outcome(response, status, code, expression)
        except AssertionError as error:
            raise AssertionError(f"{case}: {error}") from None
    assert store_counts() == before


def test_refused_bodies_leave_the_identifier_unknown(registry_server, fhir) -> None:
    value = fhir.token("err-")
    client = registry_server.client("openmrs")
    bad = fhir.patient("openmrs", value, gender="man")
    fhir.outcome(
        client.post("/fhir/Patient", content=json.dumps(bad), headers={"Content-Type": FHIR}),
        400,
        expression="Patient.gender",
    )
    good = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    assert good.status_code == 201, good.text


def test_every_problem_is_reported_with_its_expression(registry_server, fhir) -> None:
    patient = fhir.patient("openmrs", gender="man", birthDate="1990-13-01")
    response = registry_server.submit("openmrs", patient)
    body = fhir.outcome(response, 400)
    expressions = {x for issue in body["issue"] for x in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate"} <= expressions


def test_body_over_the_limit_without_content_length(registry_server, fhir, store_counts) -> None:
    """A chunked body is counted while it arrives."""
    before = store_counts()

    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType": "Patient", "text": {"div": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}}'

    response = registry_server.client("openmrs").post(
        "/fhir/Patient", content=chunks(), headers={"Content-Type": FHIR}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    fhir.outcome(response, 413, "too-costly")
    assert store_counts() == before


def test_unknown_routes_are_404_operation_outcomes(registry_server, fhir) -> None:
    client = registry_server.client("openmrs")
    for path in ("/fhir/Observation", "/fhir/Observation/1", "/fhir/Patient/x/y/z/w"):
        fhir.outcome(client.get(path), 404, "not-found")


def test_unsupported_method_is_405_with_allow(registry_server, fhir) -> None:
    created = registry_server.submit("openmrs", fhir.patient("openmrs"))
    record_id, _ = fhir.ids(created)
    response = registry_server.client("openmrs").delete(f"/fhir/Patient/{record_id}")
    fhir.outcome(response, 405, "not-supported")
    assert "GET" in response.headers.get("Allow", ""), dict(response.headers)
