"""OperationOutcome resources: the body of every FHIR error (and of warnings and notes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clientregistry.fhir.errors import FhirError, Issue, Severity


def issue(
    code: str,
    diagnostics: str,
    expression: Iterable[str] = (),
    severity: Severity = "error",
) -> Issue:
    """Shorthand for an :class:`Issue`."""
    return Issue(code, diagnostics, tuple(expression), severity)


def _issue_json(i: Issue) -> dict[str, Any]:
    out: dict[str, Any] = {"severity": i.severity, "code": i.code}
    if i.diagnostics:
        out["diagnostics"] = i.diagnostics
    if i.expression:
        out["expression"] = list(i.expression)
    return out


def operation_outcome(issues: Iterable[Issue], *, id: str | None = None) -> dict[str, Any]:
    """An OperationOutcome with one ``issue`` per :class:`Issue`.

    FHIR requires at least one issue; an empty ``issues`` gives a single
    ``information``/``informational`` issue saying all is well.
    """
    items = [_issue_json(i) for i in issues]
    if not items:
        items = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    out: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if id is not None:
        out["id"] = id
    out["issue"] = items
    return out


MAX_ISSUES = 100
MAX_DIAGNOSTICS = 1000
MAX_EXPRESSION = 256


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(i: Issue) -> Issue:
    return Issue(
        i.code,
        _cut(i.diagnostics, MAX_DIAGNOSTICS),
        tuple(_cut(e, MAX_EXPRESSION) for e in i.expression[:MAX_ISSUES]),
        i.severity,
    )


def from_error(error: FhirError) -> dict[str, Any]:
    """The OperationOutcome that explains ``error`` (send it with ``error.status``): at most
    :data:`MAX_ISSUES` issues, diagnostics cut at :data:`MAX_DIAGNOSTICS` characters, so that
    an error never echoes a large input whole."""
    return operation_outcome(_bounded(i) for i in error.issues[:MAX_ISSUES])


def information(diagnostics: str, expression: Iterable[str] = ()) -> dict[str, Any]:
    """An OperationOutcome carrying one informational note (e.g. for a 200 with no body)."""
    return operation_outcome([issue("informational", diagnostics, expression, "information")])
