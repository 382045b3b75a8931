"""FHIR errors: an HTTP status plus the OperationOutcome issues that explain it.

Every layer below the HTTP framework raises :class:`FhirError`; the API turns it into a
response with :func:`clientregistry.fhir.operation_outcome.from_error`. The factory functions
name each case the FHIR API has, with its status and issue code:

=========================  ======  ====================
case                       status  issue code
=========================  ======  ====================
malformed_json             400     structure
wrong_resource_type        400     invalid
invalid_resource           400     invalid (one issue per problem, with FHIRPath expressions)
bad_request                400     invalid (or the code given)
unauthenticated            401     login
forbidden                  403     forbidden
not_found                  404     not-found
method_not_allowed         405     not-supported
not_acceptable             406     not-supported
conflict                   409     conflict
gone                       410     deleted
precondition_failed        412     conflict (multiple-matches for ambiguous conditions)
payload_too_large          413     too-costly
unsupported_media_type     415     not-supported
business_rule              422     business-rule
missing_internal_identifier 422    business-rule
internal_error             500     exception
=========================  ======  ====================

400 is for content that breaks the base FHIR R4 rules; 422 for content that is valid FHIR but
breaks this registry's rules (FHIR R4 §3.1.0.6).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from clientregistry.errors import ClientRegistryError

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One ``OperationOutcome.issue``: what is wrong and where (FHIRPath expressions)."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: Severity = "error"


class FhirError(ClientRegistryError):
    """An error the FHIR API answers with ``status`` and an OperationOutcome.

    ``code``, ``diagnostics`` and ``expression`` describe the first (main) issue; ``issues``
    lists them all (at least one).
    """

    status: int
    code: str
    diagnostics: str
    expression: list[str]
    issues: tuple[Issue, ...]

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        expression: Sequence[str] = (),
        *,
        issues: Iterable[Issue] = (),
    ) -> None:
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = list(expression)
        given = tuple(issues)
        self.issues = given or (Issue(code, diagnostics, tuple(expression)),)
        super().__init__(diagnostics)

    def __repr__(self) -> str:
        return f"FhirError({self.status}, {self.code!r}, {self.diagnostics!r}, {self.expression!r})"

    def at(self, prefix: str, *, replace: str) -> FhirError:
        """The same error with expressions starting ``replace`` re-rooted at ``prefix``.

        Used to place a Patient's issues inside a Bundle: ``Patient.birthDate`` becomes
        ``Bundle.entry[3].resource.birthDate``.
        """

        def move(expr: str) -> str:
            if expr == replace or expr.startswith((replace + ".", replace + "[")):
                return prefix + expr[len(replace) :]
            return expr

        issues = [
            Issue(i.code, i.diagnostics, tuple(move(e) for e in i.expression), i.severity)
            for i in self.issues
        ]
        return FhirError(
            self.status,
            self.code,
            self.diagnostics,
            [move(e) for e in self.expression],
            issues=issues,
        )


def malformed_json(message: str, line: int | None = None, column: int | None = None) -> FhirError:
    """400 ``structure``: the body is not JSON (or not the JSON FHIR allows)."""
    where = f" at line {line}, column {column}" if line is not None and column is not None else ""
    return FhirError(400, "structure", f"The body is not valid JSON{where}: {message}")


def wrong_resource_type(expected: str, found: object, expression: str = "") -> FhirError:
    """400 ``invalid``: the body is a ``found`` resource (or none) where ``expected`` belongs."""
    if found is None:
        what = "no resourceType"
    elif isinstance(found, str):
        what = f"resourceType {found!r}"
    else:
        what = f"a resourceType that is not a string ({found!r})"
    where = f"{expression}: " if expression else ""
    exprs = [expression] if expression else []
    return FhirError(
        400, "invalid", f"{where}Expected a {expected} resource but found {what}", exprs
    )


def invalid_resource(issues: Sequence[Issue], resource_type: str = "Patient") -> FhirError:
    """400 ``invalid``: the resource breaks FHIR R4 rules; one issue per problem."""
    if not issues:
        raise ValueError("invalid_resource needs at least one issue")
    first = issues[0]
    if len(issues) == 1:
        summary = first.diagnostics
    else:
        summary = f"The {resource_type} is not valid FHIR R4 ({len(issues)} problems)"
    return FhirError(400, "invalid", summary, first.expression, issues=issues)


def bad_request(
    diagnostics: str, expression: Sequence[str] = (), code: str = "invalid"
) -> FhirError:
    """400 with the given issue code (``invalid`` unless told)."""
    return FhirError(400, code, diagnostics, expression)


def unauthenticated(diagnostics: str = "A valid client certificate is required") -> FhirError:
    """401 ``login``: the caller is not authenticated."""
    return FhirError(401, "login", diagnostics)


def forbidden(diagnostics: str = "The client is not allowed to do this") -> FhirError:
    """403 ``forbidden``: the caller is known but may not do this."""
    return FhirError(403, "forbidden", diagnostics)


def not_found(resource_type: str, id: str, version: str | None = None) -> FhirError:
    """404 ``not-found``: no such resource (or version)."""
    if version is None:
        return FhirError(404, "not-found", f"{resource_type}/{id} not found")
    return FhirError(404, "not-found", f"{resource_type}/{id}/_history/{version} not found")


def unknown_route(path: str) -> FhirError:
    """404 ``not-found``: nothing is served at ``path``."""
    return FhirError(404, "not-found", f"Nothing is served at {path}")


def method_not_allowed(method: str, path: str, allowed: Collection[str]) -> FhirError:
    """405 ``not-supported``; the API must also send an ``Allow`` header."""
    allow = ", ".join(sorted(allowed))
    return FhirError(
        405, "not-supported", f"{method} is not supported on {path} (allowed: {allow})"
    )


def not_acceptable(requested: str, supported: Collection[str]) -> FhirError:
    """406 ``not-supported``: the client asked for a format this server does not produce."""
    sup = ", ".join(supported)
    return FhirError(406, "not-supported", f"Cannot produce {requested!r}; supported: {sup}")


def conflict(diagnostics: str, expression: Sequence[str] = ()) -> FhirError:
    """409 ``conflict``: the request conflicts with the current state (e.g. version clash)."""
    return FhirError(409, "conflict", diagnostics, expression)


def gone(resource_type: str, id: str) -> FhirError:
    """410 ``deleted``: the resource existed but was deleted."""
    return FhirError(410, "deleted", f"{resource_type}/{id} has been deleted")


def precondition_failed(diagnostics: str, *, multiple_matches: bool = False) -> FhirError:
    """412: an ``If-Match`` version differs (``conflict``) or a conditional update matched
    several resources (``multiple-matches``)."""
    return FhirError(412, "multiple-matches" if multiple_matches else "conflict", diagnostics)


def payload_too_large(size: int, limit: int) -> FhirError:
    """413 ``too-costly``: the body is larger than the configured limit."""
    return FhirError(413, "too-costly", f"The body is {size} bytes; the limit is {limit} bytes")


def unsupported_media_type(content_type: str | None, supported: Collection[str]) -> FhirError:
    """415 ``not-supported``: the body's Content-Type is not one this server reads."""
    sup = ", ".join(supported)
    got = repr(content_type) if content_type else "no Content-Type"
    return FhirError(415, "not-supported", f"Unsupported media type {got}; send one of: {sup}")


def business_rule(diagnostics: str, expression: Sequence[str] = ()) -> FhirError:
    """422 ``business-rule``: valid FHIR that breaks a rule of this registry."""
    return FhirError(422, "business-rule", diagnostics, expression)


def missing_internal_identifier(
    systems: Collection[str], expression: str = "Patient.identifier"
) -> FhirError:
    """422 ``business-rule``: the Patient has no identifier of the caller's own system(s)."""
    names = ", ".join(sorted(systems)) or "(none configured for this client)"
    return business_rule(
        f"The Patient must have an identifier with a value in the client's own system: {names}",
        [expression],
    )


def internal_error(diagnostics: str = "Internal server error") -> FhirError:
    """500 ``exception``: something failed on the server's side."""
    return FhirError(500, "exception", diagnostics)
