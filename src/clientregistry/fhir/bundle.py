"""Batch and transaction Bundles of Patients: reading requests, writing responses.

``parse_bundle`` reads ``POST /fhir``. Each entry must be one of:

=======  ===============================  =========================================
method   request.url                      kind
=======  ===============================  =========================================
POST     ``Patient``                      ``create`` (create or update by the
                                          caller's internal identifier, as OpenCR)
PUT      ``Patient/{id}``                 ``update``
PUT      ``Patient?identifier=sys|value`` ``conditional-update`` (ITI-104)
=======  ===============================  =========================================

with a valid Patient in ``resource``; ``request.ifMatch`` on any entry and
``request.ifNoneExist`` on a POST (a conditional create) are kept for the API to check.
Problems with the Bundle itself raise :class:`FhirError`.
Problems with one entry are located at ``Bundle.entry[i]…`` (e.g. ``Bundle.entry[3].request.url``
or ``Bundle.entry[3].resource.birthDate``): in a ``transaction`` they fail the whole Bundle (one
FhirError listing every issue); in a ``batch`` the entry becomes a :class:`BadEntry` that the API
answers on its own, and the other entries go ahead.

``response_bundle`` writes the ``batch-response``/``transaction-response``. Where the client's
record landed and its golden record (CRUID):

* ``entry.response.location``: ``Patient/<id>/_history/<version>`` (FHIR);
* ``entry.response.extension``: ``{url: CRUID_EXTENSION, valueReference: {reference:
  "Patient/<golden id>"}}`` with ``CRUID_EXTENSION`` =
  ``http://openclientregistry.org/fhir/StructureDefinition/cruid`` (this registry's addition);
* the HTTP headers OpenCR sends for a Bundle, ``Location`` and ``LocationCRUID``, each a JSON
  array (``["Patient/a","Patient/b"]``), come from :func:`location_headers`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal

from fhir.resources.R4B.bundle import Bundle as BundleModel
from fhir.resources.R4B.bundle import BundleEntry as BundleEntryModel

from clientregistry.fhir.codes import CRUID_EXTENSION
from clientregistry.fhir.datatypes import etag, instant, patient_reference
from clientregistry.fhir.errors import (
    FhirError,
    Issue,
    bad_request,
    invalid_resource,
    wrong_resource_type,
)
from clientregistry.fhir.json_body import json_kind, load_object
from clientregistry.fhir.operation_outcome import from_error
from clientregistry.fhir.patient import patient_issues
from clientregistry.fhir.search_params import parse_identifier_condition
from clientregistry.fhir.validation import validate_resource

BundleType = Literal["batch", "transaction"]
EntryKind = Literal["create", "update", "conditional-update"]

DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_MAX_ENTRIES = 1000

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_UNSUPPORTED_CONDITIONS = ("ifNoneMatch", "ifModifiedSince")


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One readable request of the Bundle (``index`` is its place in ``Bundle.entry``)."""

    index: int
    method: Literal["POST", "PUT"]
    url: str
    kind: EntryKind
    resource: dict[str, Any]
    id: str | None = None
    """``PUT Patient/{id}``: the id."""
    condition: tuple[str, str] | None = None
    """``PUT Patient?identifier=system|value``: ``(system, value)``."""
    full_url: str | None = None
    if_match: str | None = None
    if_none_exist: str | None = None
    """POST only: the condition of a conditional create (a search, ``identifier=…``)."""

    @property
    def expression(self) -> str:
        """FHIRPath of this entry: ``Bundle.entry[3]``."""
        return f"Bundle.entry[{self.index}]"


@dataclass(frozen=True, slots=True)
class BadEntry:
    """A batch entry that cannot be processed; answer it with ``error`` (see
    :meth:`EntryResponse.from_error`)."""

    index: int
    error: FhirError


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """The Bundle's type and its entries in order."""

    type: BundleType
    entries: tuple[BundleEntry | BadEntry, ...]
    id: str | None = None


def _issue(code: str, where: str, message: str) -> FhirError:
    return FhirError(400, code, f"{where}: {message}", [where])


def _request(index: int, entry: Mapping[str, Any]) -> BundleEntry:
    base = f"Bundle.entry[{index}]"
    rest = {k: v for k, v in entry.items() if k != "resource"}
    issues = validate_resource(rest, BundleEntryModel, base) if rest else []
    if issues:
        raise invalid_resource(issues, "Bundle entry")
    request = entry.get("request")
    if request is None:
        raise _issue("required", f"{base}.request", "each entry needs a request (method, url)")
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT"):
        raise _issue(
            "not-supported",
            f"{base}.request.method",
            f"only POST and PUT are supported in a Bundle, not {method!r}",
        )
    for name in _UNSUPPORTED_CONDITIONS:
        if name in request:
            raise _issue("not-supported", f"{base}.request.{name}", f"{name} is not supported")
    if "ifNoneExist" in request and method != "POST":
        raise _issue(
            "not-supported",
            f"{base}.request.ifNoneExist",
            "ifNoneExist (a conditional create) goes with POST only",
        )
    if not isinstance(url, str):
        raise _issue("required", f"{base}.request.url", "the request needs a url")
    url_at = f"{base}.request.url"
    kind: EntryKind
    rid: str | None = None
    condition: tuple[str, str] | None = None
    if method == "POST":
        if url != "Patient":
            raise _issue(
                "not-supported",
                url_at,
                f"POST takes the url 'Patient' (relative to the base), not {url!r}",
            )
        kind = "create"
    elif url.startswith("Patient?"):
        try:
            condition = parse_identifier_condition(url.removeprefix("Patient?"))
        except FhirError as exc:
            raise FhirError(
                exc.status, exc.code, f"{url_at}: {exc.diagnostics}", [url_at]
            ) from None
        kind = "conditional-update"
    elif url.startswith("Patient/") and _ID.fullmatch(url.removeprefix("Patient/")):
        rid = url.removeprefix("Patient/")
        kind = "update"
    else:
        raise _issue(
            "not-supported",
            url_at,
            f"PUT takes 'Patient/<id>' or 'Patient?identifier=system|value' (relative "
            f"to the base), not {url!r}",
        )
    resource = entry.get("resource")
    res_at = f"{base}.resource"
    if resource is None:
        raise _issue("required", res_at, "each entry needs a Patient resource")
    if not isinstance(resource, dict):
        raise _issue("structure", res_at, f"expected a resource, found {json_kind(resource)}")
    if resource.get("resourceType") != "Patient":
        raise wrong_resource_type("Patient", resource.get("resourceType"), res_at)
    issues = patient_issues(resource, res_at)
    if issues:
        raise invalid_resource(issues)
    if rid is not None and resource.get("id") != rid:
        raise _issue(
            "invalid", f"{res_at}.id", f"the Patient's id must be {rid!r}, as in request.url"
        )
    full_url = entry.get("fullUrl")
    return BundleEntry(
        index,
        method,
        url,
        kind,
        resource,
        rid,
        condition,
        full_url if isinstance(full_url, str) else None,
        request.get("ifMatch"),
        request.get("ifNoneExist"),
    )


def _duplicate_targets(entries: Sequence[BundleEntry]) -> list[Issue]:
    seen: dict[object, int] = {}
    issues = []
    for e in entries:
        target = e.id if e.kind == "update" else e.condition
        if target is None:
            continue
        if target in seen:
            where = f"{e.expression}.request.url"
            issues.append(
                Issue(
                    "invalid",
                    f"{where}: a transaction may change a resource only "
                    f"once; entry {seen[target]} has the same target",
                    (where,),
                )
            )
        else:
            seen[target] = e.index
    return issues


def _fail_transaction(entries: Sequence[BundleEntry | BadEntry]) -> None:
    """A transaction is all or nothing: raise one FhirError for every bad entry."""
    bad = [e.error for e in entries if isinstance(e, BadEntry)]
    issues = [i for err in bad for i in err.issues]
    issues += _duplicate_targets([e for e in entries if isinstance(e, BundleEntry)])
    if not issues:
        return
    if len(bad) == 1 and len(issues) == len(bad[0].issues):
        raise bad[0]
    status = bad[0].status if bad else 400
    if len(issues) == 1:
        summary = issues[0].diagnostics
    else:
        summary = f"The transaction was not processed: {len(issues)} problems"
    raise FhirError(status, "invalid", summary, issues[0].expression, issues=issues)


def parse_bundle(
    body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
) -> ParsedBundle:
    """Read a batch or transaction Bundle of Patients (see the module docstring).

    Raises :class:`FhirError`: 413 over ``max_bytes`` or ``max_entries``; 400 for malformed JSON,
    a resource that is not a Bundle, a type other than batch/transaction, an invalid Bundle, or
    (transaction only) any bad entry.
    """
    bundle = load_object(body, max_bytes=max_bytes)
    if bundle.get("resourceType") != "Bundle":
        raise wrong_resource_type("Bundle", bundle.get("resourceType"))
    btype = bundle.get("type")
    if btype not in ("batch", "transaction"):
        found = "no type" if btype is None else f"type {btype!r}"
        raise bad_request(
            f"Bundle.type: expected 'batch' or 'transaction', found {found}", ["Bundle.type"]
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise _issue(
            "structure", "Bundle.entry", f"expected an array, found {json_kind(raw_entries)}"
        )
    if len(raw_entries) > max_entries:
        raise payload_too_large_entries(len(raw_entries), max_entries)
    envelope = {k: v for k, v in bundle.items() if k != "entry"}
    issues = validate_resource(envelope, BundleModel, "Bundle")
    if issues:
        raise invalid_resource(issues, "Bundle")
    entries: list[BundleEntry | BadEntry] = []
    for index, raw in enumerate(raw_entries):
        try:
            if not isinstance(raw, dict) or not raw:
                raise _issue(
                    "structure",
                    f"Bundle.entry[{index}]",
                    f"expected a non-empty object, found {json_kind(raw)}",
                )
            entries.append(_request(index, raw))
        except FhirError as exc:
            entries.append(BadEntry(index, exc))
    if btype == "transaction":
        _fail_transaction(entries)
    bid = bundle.get("id")
    return ParsedBundle(btype, tuple(entries), bid if isinstance(bid, str) else None)


def payload_too_large_entries(count: int, limit: int) -> FhirError:
    """413 ``too-costly``: more entries than allowed in one Bundle."""
    return FhirError(
        413, "too-costly", f"The Bundle has {count} entries; the limit is {limit}", ["Bundle.entry"]
    )


@dataclass(frozen=True, slots=True)
class EntryResponse:
    """The outcome of one entry, for :func:`response_bundle`."""

    status: int
    id: str | None = None
    """Id of the Patient the entry created or updated (source record)."""
    version: str | int | None = None
    cruid: str | None = None
    """Golden record id (or ``Patient/<id>``) of that Patient."""
    last_modified: datetime | None = None
    outcome: dict[str, Any] | None = None
    """An OperationOutcome: the error of a failed entry, or warnings."""
    resource: dict[str, Any] | None = None
    """The resource, when the client asked for ``Prefer: return=representation``."""
    extra_extensions: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def from_error(cls, error: FhirError) -> EntryResponse:
        """The response entry for a failed request: its status and OperationOutcome."""
        return cls(status=error.status, outcome=from_error(error))

    @property
    def location(self) -> str | None:
        """``Patient/<id>/_history/<version>`` (or ``Patient/<id>``), None without an id."""
        if self.id is None:
            return None
        ref = patient_reference(self.id)
        return ref if self.version is None else f"{ref}/_history/{self.version}"


def status_line(status: int) -> str:
    """``201`` → ``"201 Created"`` (as ``Bundle.entry.response.status`` wants)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _entry_json(r: EntryResponse, base: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {}
    extensions = list(r.extra_extensions)
    if r.cruid is not None:
        extensions.insert(
            0, {"url": CRUID_EXTENSION, "valueReference": {"reference": patient_reference(r.cruid)}}
        )
    if extensions:
        response["extension"] = extensions
    response["status"] = status_line(r.status)
    if r.location is not None:
        response["location"] = r.location
    if r.version is not None:
        response["etag"] = etag(r.version)
    if r.last_modified is not None:
        response["lastModified"] = instant(r.last_modified)
    if r.outcome is not None:
        response["outcome"] = r.outcome
    entry: dict[str, Any] = {}
    if r.resource is not None:
        if r.id is not None:
            where = patient_reference(r.id)
            entry["fullUrl"] = f"{base}/{where}" if base else where
        entry["resource"] = r.resource
    entry["response"] = response
    return entry


def response_bundle(
    type: BundleType,
    entries: Sequence[EntryResponse],
    *,
    id: str | None = None,
    timestamp: datetime | None = None,
    base: str | None = None,
) -> dict[str, Any]:
    """A ``batch-response`` or ``transaction-response`` Bundle, one entry per request, in the
    order of the request Bundle (``base``: the FHIR base URL of entries' ``fullUrl``)."""
    out: dict[str, Any] = {"resourceType": "Bundle"}
    if id is not None:
        out["id"] = id
    out["type"] = f"{type}-response"
    if timestamp is not None:
        out["timestamp"] = instant(timestamp)
    if entries:
        out["entry"] = [_entry_json(e, base) for e in entries]
    return out


def location_headers(entries: Sequence[EntryResponse]) -> dict[str, str]:
    """OpenCR's Bundle headers: ``Location`` and ``LocationCRUID`` as JSON arrays of
    ``Patient/<id>``, over the entries that have them (compact, like ``JSON.stringify``)."""
    locations = [patient_reference(e.id) for e in entries if e.id is not None]
    cruids = [patient_reference(e.cruid) for e in entries if e.cruid is not None]
    compact = (",", ":")
    return {
        "Location": json.dumps(locations, separators=compact),
        "LocationCRUID": json.dumps(cruids, separators=compact),
    }
