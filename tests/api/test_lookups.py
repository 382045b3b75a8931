"""The lookup routes over HTTP: PIXm ``$ihe-pix``, ``$match`` and Patient search (PDQm).

Two halves:

* in process, with ``httpx`` over ``httpx.ASGITransport`` (:class:`InProcess`; Starlette's
  ``TestClient`` warns that its httpx support is deprecated): an ASGI wrapper puts a real client
  certificate from the data directory into ``scope["extensions"]["tls"]`` as the TLS server
  does. It stands in for the TLS layer, which ``registry_server`` tests cover for real (and
  the end of this module does too, for these routes). The application is ``create_app``,
  which places the lookup routers before the Patient router;
* over real HTTPS against ``registry_server`` (``clientregistry serve``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from clientregistry.api.app import create_app
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import add_system_to_config, init_data_dir
from clientregistry.security.authority import CertificateAuthority
from clientregistry.settings import ClientSystemConfig, load_settings
from clientregistry.store.db import transaction
from clientregistry.store.models import AuditEvent

FHIR_JSON = "application/fhir+json"
NID = "http://example.org/national-id"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
GOLDEN_CODE = "5c827da5-4858-4f3d-a50c-62ece001efea"
HIE = ClientSystemConfig(
    "hie", "Health Information Exchange", "http://clientregistry.org/hie",
    ("read-identifiers", "read-demographics"),
)  # fmt: skip
FEEDER = ClientSystemConfig("feeder", "Feeder", "http://clientregistry.org/feeder", ("submit",))
"""May submit, may not look anything up."""


def sys_uri(system: str) -> str:
    return f"http://clientregistry.org/{system}"


def lookup_app(context: RegistryContext) -> FastAPI:
    """The registry's application (it serves the lookup routes before the Patient routes)."""
    return create_app(context)


class WithCertificate:
    """Adds a client certificate to each HTTP request, as the TLS layer does."""

    def __init__(self, app: FastAPI, pem: str) -> None:
        self.app = app
        self.pem = pem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_chain": [self.pem]}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class InProcess:
    """A synchronous HTTP client of an ASGI application (one event loop per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def patient(system: str, value: str, **fields: Any) -> dict[str, Any]:
    identifiers = [{"system": sys_uri(system), "value": value}]
    if "nid" in fields:
        identifiers.append({"system": NID, "value": fields.pop("nid")})
    out: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    given, family = fields.pop("given", None), fields.pop("family", None)
    if given or family:
        out["name"] = [{"family": family, "given": [given]}]
    out.update(fields)
    return out


AMARA = {
    "given": "Amara",
    "family": "Okonkwo",
    "birthDate": "1985-03-14",
    "gender": "female",
    "telecom": [{"system": "phone", "value": "0772000001"}],
    "nid": "N-123",
}


@dataclass
class Api:
    context: RegistryContext
    clients: dict[str, InProcess]
    ids: dict[str, tuple[str, str]]
    """key -> (source record id, golden record id)"""

    def __getitem__(self, system: str) -> InProcess:
        return self.clients[system]

    def audit_events(self) -> list[AuditEvent]:
        with transaction(self.context.sessions, write=False) as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("lookups") / "data"
    init_data_dir(data_dir, hostnames=[])
    authority = CertificateAuthority.load(data_dir / "certs")
    for extra in (HIE, FEEDER):
        authority.issue_client(extra.name)
        add_system_to_config(data_dir, extra)
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    app = lookup_app(context)
    clients = {}
    for name in ("openmrs", "dhis2", "lims", "hie", "feeder"):
        pem = (data_dir / "certs" / "clients" / f"{name}.pem").read_text()
        clients[name] = InProcess(WithCertificate(app, pem))
    result = Api(context, clients, {})
    for key, system, resource in [
        ("amara-openmrs", "openmrs", patient("openmrs", "ox1", **AMARA)),
        ("amara-dhis2", "dhis2", patient("dhis2", "dx1", **AMARA)),
        (
            "zawadi",
            "lims",
            patient(
                "lims",
                "lz1",
                given="Zawadi",
                family="Kiprotich",
                birthDate="1992-11-02",
                gender="female",
            ),
        ),
    ]:
        response = clients[system].post(
            "/fhir/Patient", content=json.dumps(resource), headers={"Content-Type": FHIR_JSON}
        )
        assert response.status_code == 201, response.text
        result.ids[key] = (
            response.headers["Location"].removeprefix("Patient/"),
            response.headers["LocationCRUID"].removeprefix("Patient/"),
        )
    yield result
    context.close()


def outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code, body
    return body


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    return body


# ============================================================================ PIXm


def pix(client: InProcess | httpx.Client, query: str) -> httpx.Response:
    return client.get(f"/fhir/Patient/$ihe-pix?{query}", headers={"Accept": FHIR_JSON})


def test_pix_answers_parameters(api: Api) -> None:
    body = ok(pix(api["openmrs"], f"sourceIdentifier={sys_uri('openmrs')}|ox1"))
    assert body["resourceType"] == "Parameters"
    record, golden = api.ids["amara-dhis2"]
    items = body["parameter"]
    assert items[0] == {"name": "targetId", "valueReference": {"reference": f"Patient/{golden}"}}
    assert sorted(items[1:], key=json.dumps) == sorted(
        [
            {"name": "targetId", "valueReference": {"reference": f"Patient/{record}"}},
            {"name": "targetIdentifier", "valueIdentifier": {"system": NID, "value": "N-123"}},
            {
                "name": "targetIdentifier",
                "valueIdentifier": {"system": sys_uri("dhis2"), "value": "dx1"},
            },
        ],
        key=json.dumps,
    )


def test_pix_target_system(api: Api) -> None:
    query = f"sourceIdentifier={sys_uri('openmrs')}|ox1&targetSystem={sys_uri('dhis2')}"
    body = ok(pix(api["dhis2"], query))
    identifiers = [
        p["valueIdentifier"] for p in body["parameter"] if p["name"] == "targetIdentifier"
    ]
    assert identifiers == [{"system": sys_uri("dhis2"), "value": "dx1"}]


def test_pix_percent_encoded_query(api: Api) -> None:
    response = api["openmrs"].get(
        "/fhir/Patient/$ihe-pix",
        params={
            "sourceIdentifier": f"{sys_uri('openmrs')}|ox1",
            "_format": "application/fhir+json",
        },
    )
    assert ok(response)["resourceType"] == "Parameters"


def test_pix_unknown_value_is_404(api: Api) -> None:
    body = outcome(
        pix(api["openmrs"], f"sourceIdentifier={sys_uri('openmrs')}|nobody"), 404, "not-found"
    )
    assert body["issue"][0]["diagnostics"] == "sourceIdentifier Patient Identifier not found"


def test_pix_unknown_system_is_400(api: Api) -> None:
    body = outcome(pix(api["openmrs"], "sourceIdentifier=urn:oid:9.9.9|ox1"), 400, "code-invalid")
    assert body["issue"][0]["diagnostics"] == "sourceIdentifier Assigning Authority not found"


def test_pix_unknown_target_system_is_403(api: Api) -> None:
    query = f"sourceIdentifier={sys_uri('openmrs')}|ox1&targetSystem=urn:oid:9.9.9"
    body = outcome(pix(api["openmrs"], query), 403, "code-invalid")
    assert body["issue"][0]["diagnostics"] == "targetSystem not found"


def test_pix_system_known_from_stored_identifiers(api: Api) -> None:
    body = ok(pix(api["lims"], f"sourceIdentifier={NID}|N-123&targetSystem={sys_uri('openmrs')}"))
    identifiers = [
        p["valueIdentifier"] for p in body["parameter"] if p["name"] == "targetIdentifier"
    ]
    assert identifiers == [{"system": sys_uri("openmrs"), "value": "ox1"}]
    outcome(pix(api["lims"], f"sourceIdentifier={NID}|N-999"), 404, "not-found")


@pytest.mark.parametrize(
    "query",
    ["", "sourceIdentifier=ox1", f"sourceIdentifier={sys_uri('openmrs')}|ox1&patient=1"],
)
def test_pix_bad_queries(api: Api, query: str) -> None:
    response = pix(api["openmrs"], query)
    assert response.status_code == 400, response.text


def test_pix_needs_a_lookup_permission(api: Api) -> None:
    outcome(pix(api["feeder"], f"sourceIdentifier={sys_uri('openmrs')}|ox1"), 403, "forbidden")


def test_pix_is_audited_including_failures(api: Api) -> None:
    pix(api["dhis2"], f"sourceIdentifier={sys_uri('dhis2')}|audit-me")
    pix(api["dhis2"], f"sourceIdentifier={sys_uri('dhis2')}|dx1")
    events = [e for e in api.audit_events() if e.agent == "dhis2"]
    failed = [e for e in events if e.outcome == 4 and "$ihe-pix" in e.event_type]
    assert failed, [(e.event_type, e.outcome, e.detail) for e in events]
    assert failed[-1].detail is not None
    assert failed[-1].detail["status"] == 404
    done = [e for e in events if e.event_type == "operation"][-1]
    assert (done.action.value, done.outcome) == ("E", 0)
    assert done.detail is not None
    assert done.detail["transaction"] == "ITI-83"
    assert done.detail["query"] == f"sourceIdentifier={sys_uri('dhis2')}|dx1"
    assert done.entity == f"Patient/{api.ids['amara-dhis2'][1]}"


# ============================================================================ $match


def parameters(resource: dict[str, Any], **options: Any) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    if "only" in options:
        items.append({"name": "onlyCertainMatches", "valueBoolean": options["only"]})
    if "count" in options:
        items.append({"name": "count", "valueInteger": options["count"]})
    return {"resourceType": "Parameters", "parameter": items}


def post_match(client: InProcess | httpx.Client, body: Any, **headers: str) -> httpx.Response:
    return client.post(
        "/fhir/Patient/$match",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Content-Type": FHIR_JSON, **headers},
    )


def zawadi(**changes: Any) -> dict[str, Any]:
    fields = {
        "resourceType": "Patient",
        "name": [{"family": "Kiprotich", "given": ["Zawadi"]}],
        "birthDate": "1992-11-02",
        "gender": "female",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def test_match_for_a_point_of_service_system_gives_golden_records(api: Api) -> None:
    bundle = ok(post_match(api["openmrs"], parameters(zawadi())))
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    [entry] = bundle["entry"]
    golden = api.ids["zawadi"][1]
    # the configured base URL, not the request's Host (http://testserver)
    assert entry["fullUrl"] == f"{api.context.settings.fhir_base}/Patient/{golden}"
    assert entry["fullUrl"].startswith("https://localhost:3000/fhir/")
    assert entry["resource"]["id"] == golden
    assert entry["resource"]["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert entry["resource"]["identifier"] == [{"system": sys_uri("lims"), "value": "lz1"}]
    assert "name" not in entry["resource"]
    assert "birthDate" not in entry["resource"]
    assert entry["search"]["mode"] == "match"
    assert entry["search"]["extension"] == [{"url": MATCH_GRADE, "valueCode": "certain"}]
    assert 0.99 < entry["search"]["score"] <= 1


def test_match_for_a_demographics_reader_gives_source_records(api: Api) -> None:
    bundle = ok(post_match(api["hie"], zawadi()))  # a bare Patient
    [entry] = bundle["entry"]
    assert entry["resource"]["id"] == api.ids["zawadi"][0]
    assert entry["resource"]["name"][0]["family"] == "Kiprotich"


def test_match_grades(api: Api) -> None:
    # given + family + gender: 104.97, probable; with the gender wrong: 103.46, possible
    probable = ok(post_match(api["openmrs"], zawadi(birthDate=None)))
    possible = ok(post_match(api["openmrs"], zawadi(birthDate=None, gender="male")))
    grades = [b["entry"][0]["search"]["extension"][0]["valueCode"] for b in (probable, possible)]
    assert grades == ["probable", "possible"]
    scores = [b["entry"][0]["search"]["score"] for b in (probable, possible)]
    assert 1 > scores[0] > scores[1] >= 0.5


def test_match_certainly_not(api: Api) -> None:
    # Amara's names, another gender and national id number: 102.46 and a conflicting id
    other = {
        "resourceType": "Patient",
        "name": [{"family": "Okonkwo", "given": ["Amara"]}],
        "gender": "male",
        "identifier": [{"system": NID, "value": "N-999"}],
    }
    bundle = ok(post_match(api["openmrs"], parameters(other)))
    [entry] = bundle["entry"]
    assert entry["resource"]["id"] == api.ids["amara-openmrs"][1]
    assert entry["search"]["extension"][0]["valueCode"] == "certainly-not"
    assert entry["search"]["score"] == 0


def test_match_only_certain(api: Api) -> None:
    certain = ok(post_match(api["openmrs"], parameters(zawadi(), only=True)))
    assert certain["total"] == 1
    probable = ok(post_match(api["openmrs"], parameters(zawadi(birthDate=None), only=True)))
    assert probable["total"] == 0
    assert "entry" not in probable


def test_match_nothing(api: Api) -> None:
    nobody = {"resourceType": "Patient", "name": [{"family": "Nobody", "given": ["Atall"]}]}
    assert ok(post_match(api["openmrs"], parameters(nobody, count=5)))["total"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "structure"),
        ({"resourceType": "Observation", "status": "final"}, 400, "invalid"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 1}]},
            400,
            "required",
        ),
        (parameters(zawadi(), count=0), 400, "invalid"),
        (parameters({"resourceType": "Patient", "birthDate": "1992-13-01"}), 400, "value"),
    ],
)
def test_match_bad_requests(api: Api, body: Any, status: int, code: str) -> None:
    outcome(post_match(api["openmrs"], body), status, code)


def test_match_needs_fhir_json(api: Api) -> None:
    response = api["openmrs"].post(
        "/fhir/Patient/$match", content=b"resource=x", headers={"Content-Type": "text/plain"}
    )
    outcome(response, 415, "not-supported")


def test_match_needs_a_lookup_permission(api: Api) -> None:
    outcome(post_match(api["feeder"], zawadi()), 403, "forbidden")


def test_match_is_audited(api: Api) -> None:
    ok(post_match(api["lims"], zawadi()))
    events = [e for e in api.audit_events() if e.agent == "lims" and e.event_type == "operation"]
    assert events[-1].detail is not None
    assert events[-1].detail["transaction"] == "ITI-119"
    assert events[-1].entity == f"Patient/{api.ids['zawadi'][1]}"


# ============================================================================ search


def ids_of(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def test_search_by_family(api: Api) -> None:
    bundle = ok(api["hie"].get("/fhir/Patient", params={"family": "okonk"}))
    assert bundle["type"] == "searchset"
    assert ids_of(bundle) == sorted([api.ids["amara-openmrs"][0], api.ids["amara-dhis2"][0]])
    assert bundle["total"] == 2


def test_search_by_identifier_with_include_finds_the_cruid(api: Api) -> None:
    response = api["hie"].get(
        "/fhir/Patient",
        params={"identifier": f"{sys_uri('openmrs')}|ox1", "_include": "Patient:link"},
    )
    bundle = ok(response)
    assert ids_of(bundle) == [api.ids["amara-openmrs"][0]]
    assert ids_of(bundle, "include") == [api.ids["amara-openmrs"][1]]


def test_search_post_form(api: Api) -> None:
    response = api["hie"].post(
        "/fhir/Patient/_search",
        content="family=Kiprotich&birthdate=1992",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ids_of(ok(response)) == [api.ids["zawadi"][0]]
    response = api["hie"].post(
        "/fhir/Patient/_search?gender=female",
        content="family=Kiprotich",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert ids_of(ok(response)) == [api.ids["zawadi"][0]]
    response = api["hie"].post(
        "/fhir/Patient/_search", content="{}", headers={"Content-Type": FHIR_JSON}
    )
    outcome(response, 415, "not-supported")


def test_search_get_on_search_path(api: Api) -> None:
    response = api["hie"].get("/fhir/Patient/_search", params={"family": "Kiprotich"})
    assert ids_of(ok(response)) == [api.ids["zawadi"][0]]


def test_search_paging_links_are_followable(api: Api) -> None:
    client = api["hie"]
    url: str | None = "/fhir/Patient?_count=1"
    seen: list[str] = []
    while url is not None:
        bundle = ok(client.get(url))
        seen += ids_of(bundle)
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert urlsplit(links["self"]).path == "/fhir/Patient"
        url = links.get("next")
    assert sorted(seen) == seen
    assert len(seen) == 3


def test_search_summary_count(api: Api) -> None:
    bundle = ok(api["hie"].get("/fhir/Patient", params={"gender": "female", "_summary": "count"}))
    assert bundle["total"] == 3
    assert "entry" not in bundle


def test_search_needs_read_demographics(api: Api) -> None:
    outcome(api["openmrs"].get("/fhir/Patient", params={"family": "Kiprotich"}), 403, "forbidden")
    response = api["openmrs"].post(
        "/fhir/Patient/_search",
        content="family=Kiprotich",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    outcome(response, 403, "forbidden")


def test_search_unknown_parameter_is_400_when_strict(api: Api) -> None:
    strict = {"Prefer": "handling=strict"}
    response = api["hie"].get("/fhir/Patient", params={"nickname": "x"}, headers=strict)
    outcome(response, 400, "not-supported")


def test_search_unknown_parameter_is_ignored_with_a_warning_by_default(api: Api) -> None:
    bundle = ok(api["hie"].get("/fhir/Patient", params={"family": "okonk", "nickname": "x"}))
    assert ids_of(bundle) == sorted([api.ids["amara-openmrs"][0], api.ids["amara-dhis2"][0]])
    [warning] = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert warning["resource"]["issue"][0]["severity"] == "warning"
    assert "nickname" in warning["resource"]["issue"][0]["diagnostics"]
    assert "nickname" not in bundle["link"][0]["url"]


def test_search_is_audited(api: Api) -> None:
    ok(api["hie"].get("/fhir/Patient", params={"family": "audit"}))
    events = [e for e in api.audit_events() if e.agent == "hie" and e.event_type == "search-type"]
    assert events[-1].action.value == "R"
    assert events[-1].detail is not None
    assert events[-1].detail["query"] == "family=audit"
    assert events[-1].detail["transaction"] == "ITI-78"


def test_reads_still_work_after_the_lookup_routes(api: Api) -> None:
    record, golden = api.ids["zawadi"]
    assert ok(api["hie"].get(f"/fhir/Patient/{record}"))["id"] == record
    assert ok(api["openmrs"].get(f"/fhir/Patient/{golden}"))["id"] == golden


# ============================================================================ over real HTTPS


@pytest.fixture(scope="module")
def served(registry_server: Any) -> Any:
    """The real server; $ihe-pix must reach PIXm, not the Patient read route."""
    response = pix(registry_server.client("openmrs"), "sourceIdentifier=urn:x|1")
    body = response.json()
    diagnostics = (body.get("issue") or [{}])[0].get("diagnostics", "")
    assert diagnostics == "sourceIdentifier Assigning Authority not found", body
    return registry_server


def test_https_pix_match_and_search(served: Any, fhir: Any) -> None:
    value = fhir.token("px")
    person = fhir.person()
    created = served.submit("openmrs", fhir.patient("openmrs", value, person))
    assert created.status_code == 201, created.text
    record, golden = fhir.ids(created)
    other = served.submit("dhis2", fhir.patient("dhis2", fhir.token("dx"), person))
    other_record, other_golden = fhir.ids(other)
    assert other_golden == golden

    openmrs = served.client("openmrs")
    body = ok(pix(openmrs, f"sourceIdentifier={sys_uri('openmrs')}|{value}"))
    references = [
        p["valueReference"]["reference"] for p in body["parameter"] if "valueReference" in p
    ]
    assert references == [f"Patient/{golden}", f"Patient/{other_record}"]
    fhir.outcome(
        pix(openmrs, f"sourceIdentifier={sys_uri('openmrs')}|{fhir.token()}"), 404, "not-found"
    )
    fhir.outcome(pix(openmrs, f"sourceIdentifier=urn:oid:9.9|{value}"), 400, "code-invalid")
    fhir.outcome(
        pix(openmrs, f"sourceIdentifier={sys_uri('openmrs')}|{value}&targetSystem=urn:oid:9.9"),
        403,
        "code-invalid",
    )

    probe = {"resourceType": "Patient", **{k: person[k] for k in ("name", "birthDate", "gender")}}
    bundle = ok(post_match(openmrs, parameters(probe, only=True)))
    [entry] = bundle["entry"]
    assert entry["resource"]["id"] == golden
    assert entry["search"]["extension"][0]["valueCode"] == "certain"

    hie = served.client("hie")
    family = person["name"][0]["family"]
    found = ok(hie.get("/fhir/Patient", params={"family": family, "_include": "Patient:link"}))
    assert sorted(ids_of(found)) == sorted([record, other_record])
    assert ids_of(found, "include") == [golden]
    fhir.outcome(openmrs.get("/fhir/Patient", params={"family": family}), 403, "forbidden")
