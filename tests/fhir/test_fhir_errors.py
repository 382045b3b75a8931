"""FhirError cases and their OperationOutcomes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from clientregistry.errors import ClientRegistryError
from clientregistry.fhir import errors
from clientregistry.fhir.errors import FhirError, Issue
from clientregistry.fhir.operation_outcome import (
    from_error,
    information,
    issue,
    operation_outcome,
)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: errors.malformed_json("bad", 1, 2), 400, "structure"),
        (lambda: errors.wrong_resource_type("Patient", "Observation"), 400, "invalid"),
        (lambda: errors.bad_request("x"), 400, "invalid"),
        (lambda: errors.unauthenticated(), 401, "login"),
        (lambda: errors.forbidden(), 403, "forbidden"),
        (lambda: errors.not_found("Patient", "1"), 404, "not-found"),
        (lambda: errors.unknown_route("/fhir/Nope"), 404, "not-found"),
        (
            lambda: errors.method_not_allowed("DELETE", "/fhir/Patient/1", ["GET"]),
            405,
            "not-supported",
        ),
        (lambda: errors.not_acceptable("xml", ["json"]), 406, "not-supported"),
        (lambda: errors.conflict("x"), 409, "conflict"),
        (lambda: errors.gone("Patient", "1"), 410, "deleted"),
        (lambda: errors.precondition_failed("x"), 412, "conflict"),
        (lambda: errors.precondition_failed("x", multiple_matches=True), 412, "multiple-matches"),
        (lambda: errors.payload_too_large(10, 5), 413, "too-costly"),
        (
            lambda: errors.unsupported_media_type("text/xml", ["application/fhir+json"]),
            415,
            "not-supported",
        ),
        (lambda: errors.business_rule("x"), 422, "business-rule"),
        (lambda: errors.missing_internal_identifier(["http://a"]), 422, "business-rule"),
        (lambda: errors.internal_error(), 500, "exception"),
    ],
)
def test_cases(make: Callable[[], FhirError], status: int, code: str) -> None:
    error = make()
    assert isinstance(error, ClientRegistryError)
    assert (error.status, error.code) == (status, code)
    outcome = from_error(error)
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["code"] == code
    assert outcome["issue"][0]["diagnostics"] == error.diagnostics


def test_messages() -> None:
    assert "line 3, column 7" in errors.malformed_json("x", 3, 7).diagnostics
    assert errors.not_found("Patient", "1", "2").diagnostics == "Patient/1/_history/2 not found"
    assert "'text/xml'" in errors.unsupported_media_type("text/xml", ["a"]).diagnostics
    assert "no Content-Type" in errors.unsupported_media_type(None, ["a"]).diagnostics
    assert "GET, PUT" in errors.method_not_allowed("DELETE", "/p", ["PUT", "GET"]).diagnostics
    assert errors.missing_internal_identifier([]).expression == ["Patient.identifier"]


def test_invalid_resource_keeps_every_issue() -> None:
    issues = [Issue("value", "a", ("Patient.a",)), Issue("structure", "b", ("Patient.b",))]
    error = errors.invalid_resource(issues)
    assert (error.status, error.code, error.expression) == (400, "invalid", ["Patient.a"])
    assert [i["code"] for i in from_error(error)["issue"]] == ["value", "structure"]
    with pytest.raises(ValueError):
        errors.invalid_resource([])


def test_rerooting_into_a_bundle() -> None:
    error = errors.invalid_resource([Issue("value", "bad", ("Patient.birthDate",))])
    moved = error.at("Bundle.entry[3].resource", replace="Patient")
    assert moved.expression == ["Bundle.entry[3].resource.birthDate"]
    assert moved.issues[0].expression == ("Bundle.entry[3].resource.birthDate",)
    untouched = errors.bad_request("x", ["PatientX.y"]).at("B", replace="Patient")
    assert untouched.expression == ["PatientX.y"]


def test_operation_outcome_shapes() -> None:
    outcome = operation_outcome(
        [
            issue("informational", "note", severity="information"),
            issue("processing", "careful", ["Patient.name"], "warning"),
        ],
        id="oo-1",
    )
    OperationOutcome.model_validate(outcome)
    assert outcome == {
        "resourceType": "OperationOutcome",
        "id": "oo-1",
        "issue": [
            {"severity": "information", "code": "informational", "diagnostics": "note"},
            {
                "severity": "warning",
                "code": "processing",
                "diagnostics": "careful",
                "expression": ["Patient.name"],
            },
        ],
    }
    empty = operation_outcome([])
    OperationOutcome.model_validate(empty)
    assert empty["issue"][0]["severity"] == "information"
    assert information("done")["issue"][0]["code"] == "informational"
    assert repr(errors.forbidden("no")) == "FhirError(403, 'forbidden', 'no', [])"
