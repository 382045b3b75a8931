"""The CapabilityStatement served at ``GET /fhir/metadata``, built from what the API really does.

Nothing here is hard-wired: the API layer passes the interactions, search parameters and
operations it has routes for, so the statement cannot claim more (or less) than exists.
Unknown codes raise :class:`ValueError` (a programming error, not a client error).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from clientregistry.fhir.codes import FHIR_JSON, FHIR_VERSION, FHIR_XML, SECURITY_SERVICE_SYSTEM
from clientregistry.fhir.datatypes import instant

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")

_SP = "http://hl7.org/fhir/SearchParameter/"
PATIENT_SEARCH_PARAMS: Mapping[str, tuple[str, str]] = {
    "_id": ("token", _SP + "Resource-id"),
    "_lastUpdated": ("date", _SP + "Resource-lastUpdated"),
    "identifier": ("token", _SP + "Patient-identifier"),
    "active": ("token", _SP + "Patient-active"),
    "name": ("string", _SP + "Patient-name"),
    "family": ("string", _SP + "individual-family"),
    "given": ("string", _SP + "individual-given"),
    "birthdate": ("date", _SP + "individual-birthdate"),
    "gender": ("token", _SP + "individual-gender"),
    "telecom": ("token", _SP + "individual-telecom"),
    "phone": ("token", _SP + "individual-phone"),
    "email": ("token", _SP + "individual-email"),
    "address": ("string", _SP + "individual-address"),
    "address-city": ("string", _SP + "individual-address-city"),
    "address-country": ("string", _SP + "individual-address-country"),
    "address-postalcode": ("string", _SP + "individual-address-postalcode"),
    "address-state": ("string", _SP + "individual-address-state"),
    "link": ("reference", _SP + "Patient-link"),
    "deceased": ("token", _SP + "Patient-deceased"),
    "death-date": ("date", _SP + "Patient-death-date"),
    "mothersMaidenName": ("string", _SP + "patient-extensions-Patient-mothersMaidenName"),
}
"""Patient search parameters this module can describe: name → (type, definition)."""

PATIENT_OPERATIONS: Mapping[str, str] = {
    "ihe-pix": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
    "match": "http://hl7.org/fhir/OperationDefinition/Patient-match",
    "merge": "http://hl7.org/fhir/OperationDefinition/Patient-merge",
}
"""Patient operations this module can describe: name (without ``$``) → definition."""

Versioning = Literal["no-version", "versioned", "versioned-update"]


def _check(kind: str, given: Iterable[str], known: Collection[str]) -> list[str]:
    items = list(dict.fromkeys(given))
    unknown = [i for i in items if i not in known]
    if unknown:
        raise ValueError(f"unknown {kind}: {', '.join(unknown)}")
    return items


def capability_statement(
    base_url: str,
    version: str,
    *,
    interactions: Iterable[str],
    system_interactions: Iterable[str] = (),
    search_params: Iterable[str] = (),
    search_includes: Iterable[str] = (),
    operations: Iterable[str] = (),
    conditional_update: bool = False,
    conditional_create: bool = False,
    update_create: bool = False,
    versioning: Versioning = "versioned",
    mutual_tls: bool = True,
    date: datetime | None = None,
    software_name: str = "clientregistry",
    instantiates: Iterable[str] = (),
) -> dict[str, Any]:
    """A FHIR R4 (4.0.1) CapabilityStatement (``kind: instance``) for this server.

    ``interactions`` are Patient type/instance interactions (``read``, ``vread``,
    ``history-instance``, ``create``, ``update``, ``search-type`` ...); ``system_interactions``
    are ``batch``/``transaction``/...; ``search_params`` names from
    :data:`PATIENT_SEARCH_PARAMS`; ``operations`` names from :data:`PATIENT_OPERATIONS`
    (``ihe-pix``, ``match``, ``merge``). ``mutual_tls`` declares client-certificate
    authentication (restful-security-service ``Certificates``). ``date`` defaults to now.
    """
    type_codes = _check("interaction", interactions, TYPE_INTERACTIONS)
    system_codes = _check("system interaction", system_interactions, SYSTEM_INTERACTIONS)
    params = _check("search parameter", search_params, PATIENT_SEARCH_PARAMS)
    ops = _check("operation", operations, PATIENT_OPERATIONS)
    if params and "search-type" not in type_codes:
        raise ValueError("search parameters need the search-type interaction")

    patient: dict[str, Any] = {
        "type": "Patient",
        "profile": "http://hl7.org/fhir/StructureDefinition/Patient",
    }
    if type_codes:
        patient["interaction"] = [{"code": c} for c in type_codes]
    patient["versioning"] = versioning
    patient["readHistory"] = "vread" in type_codes
    patient["updateCreate"] = update_create
    patient["conditionalCreate"] = conditional_create
    patient["conditionalRead"] = "not-supported"
    patient["conditionalUpdate"] = conditional_update
    patient["conditionalDelete"] = "not-supported"
    includes = list(dict.fromkeys(search_includes))
    if includes:
        patient["searchInclude"] = includes
    if params:
        patient["searchParam"] = [
            {
                "name": p,
                "definition": PATIENT_SEARCH_PARAMS[p][1],
                "type": PATIENT_SEARCH_PARAMS[p][0],
            }
            for p in params
        ]
    if ops:
        patient["operation"] = [{"name": o, "definition": PATIENT_OPERATIONS[o]} for o in ops]

    rest: dict[str, Any] = {"mode": "server"}
    if mutual_tls:
        rest["security"] = {
            "cors": False,
            "service": [
                {
                    "coding": [{"system": SECURITY_SERVICE_SYSTEM, "code": "Certificates"}],
                    "text": "Mutual TLS: clients authenticate with a certificate issued by "
                    "the registry's CA; the certificate's CN is the client id",
                }
            ],
        }
    rest["resource"] = [patient]
    if system_codes:
        rest["interaction"] = [{"code": c} for c in system_codes]

    out: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(date or datetime.now(UTC)),
        "publisher": "clientregistry",
        "kind": "instance",
    }
    inst = list(instantiates)
    if inst:
        out["instantiates"] = inst
    out["software"] = {"name": software_name, "version": version}
    out["implementation"] = {"description": f"{software_name} FHIR API", "url": base_url}
    out["fhirVersion"] = FHIR_VERSION
    out["format"] = [FHIR_JSON, "json", FHIR_XML, "xml"]
    out["rest"] = [rest]
    return out
