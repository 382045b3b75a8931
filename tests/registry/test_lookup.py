"""The lookup use cases in process: PIXm cross-references, $match grades, Patient search.

One registry (SQLite, default decision rules) is filled once per module with a few people;
the tests only read it, except those that add their own people. Fewer than 50 records are
stored, so term frequencies stay off and scores are the rules' plain weights:
given 2.23, family 2.45, birth date 3.63, gender 0.29 (disagreeing −1.22), phone 3.90,
identifier 3.95 (disagreeing −1.00), city / postal code / address line disagreeing
−0.99 / −0.99 / −0.82; potential 103, auto 105.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import select

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.search_params import query_pairs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.lookup import (
    Caller,
    MatchRequest,
    PatientQuery,
    PixQuery,
    cross_reference,
    date_matches,
    match_bundle,
    match_people,
    parse_date_value,
    parse_match_request,
    parse_patient_query,
    parse_pix_query,
    record_lookup,
    search,
    select_matches,
    string_matches,
)
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import SubmitResult, Submitter
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction
from clientregistry.store.models import AuditEvent, BrokenMatch

NID = "http://example.org/national-id"
BASE = "https://cr.example.org/fhir"
GOLDEN_CODE = "5c827da5-4858-4f3d-a50c-62ece001efea"


def sys_uri(system: str) -> str:
    return f"http://clientregistry.org/{system}"


def patient(
    system: str,
    value: str,
    given: str | None = None,
    family: str | None = None,
    *,
    birth: str | None = None,
    gender: str | None = None,
    phone: str | None = None,
    nid: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Patient with ``system``'s internal identifier ``value`` (system None: no such id)."""
    identifiers = [{"system": sys_uri(system), "value": value}] if system else []
    if nid is not None:
        identifiers.append({"system": NID, "value": nid})
    out: dict[str, Any] = {"resourceType": "Patient"}
    if identifiers:
        out["identifier"] = identifiers
    if given or family:
        name: dict[str, Any] = {}
        if family:
            name["family"] = family
        if given:
            name["given"] = [given]
        out["name"] = [name]
    if birth:
        out["birthDate"] = birth
    if gender:
        out["gender"] = gender
    if phone:
        out["telecom"] = [{"system": "phone", "value": phone}]
    out.update(extra)
    return out


@dataclass
class Registry:
    context: RegistryContext
    ids: dict[str, SubmitResult]

    def submit(self, key: str, system: str, resource: dict[str, Any]) -> SubmitResult:
        client = self.context.settings.systems[system]
        with transaction(self.context.sessions) as session:
            result = Submitter(self.context).submit(session, resource, client)
        self.ids[key] = result
        return result

    def record(self, key: str) -> str:
        return self.ids[key].record_id

    def golden(self, key: str) -> str:
        return self.ids[key].golden_id

    def pix(self, system: str, value: str, *targets: str) -> dict[str, Any]:
        with transaction(self.context.sessions, write=False) as session:
            return cross_reference(
                session, self.context.settings, PixQuery(system, value, targets)
            ).parameters

    def match(
        self, resource: dict[str, Any], *, only: bool = False, count: int = 10
    ) -> list[tuple[str, str, float]]:
        """(golden id, grade, score) of the matches of ``resource``."""
        request = MatchRequest(resource, only, count)
        with transaction(self.context.sessions, write=False) as session:
            found = select_matches(match_people(session, self.context, resource), request)
        return [(m.golden_id, m.grade, m.score) for m in found]

    def match_bundle(self, resource: dict[str, Any], *, demographics: bool) -> dict[str, Any]:
        with transaction(self.context.sessions, write=False) as session:
            found = select_matches(
                match_people(session, self.context, resource), MatchRequest(resource)
            )
            return match_bundle(
                session, self.context.settings, found, demographics=demographics, base=BASE
            )

    def search(self, query: str | PatientQuery) -> dict[str, Any]:
        parsed = parse_patient_query(query_pairs(query)) if isinstance(query, str) else query
        with transaction(self.context.sessions, write=False) as session:
            bundle, _ = search(session, self.context.settings, parsed, base=BASE)
        return bundle

    def found(self, query: str) -> list[str]:
        """Ids of the match entries of a search."""
        bundle = self.search(query)
        return [
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        ]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[Registry]:
    with fresh_database(request.param) as url:
        data_dir: Path = tmp_path_factory.mktemp("lookup") / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        try:
            yield _fill(Registry(context, {}))
        finally:
            context.close()


def _fill(reg: Registry) -> Registry:
    """The module's people (see the module docstring for the weights)."""
    amara = {
        "given": "Amara",
        "family": "Okonkwo",
        "birth": "1985-03-14",
        "gender": "female",
        "phone": "0772000001",
        "nid": "N-123",
    }
    reg.submit("amara-openmrs", "openmrs", patient("openmrs", "ox1", **amara))
    reg.submit("amara-dhis2", "dhis2", patient("dhis2", "dx1", **amara))
    reg.submit(
        "muller",
        "openmrs",
        patient(
            "openmrs",
            "om2",
            "Jürgen",
            "Müller",
            birth="1970-06",
            gender="male",
            active=True,
            address=[{"line": ["Plot 5 Main St"], "city": "Kampala", "postalCode": "25601"}],
            extension=[
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                    "valueString": "Nakato",
                }
            ],
        ),
    )
    for i, (given, birth) in enumerate(
        [
            ("Anna", "1950-01-01"),
            ("Ben", "1960-02-02"),
            ("Cleo", "1971-03-03"),
            ("Dan", "1982-04-04"),
            ("Eve", "1993-05-05"),
        ]
    ):
        gender = "female" if given in ("Anna", "Cleo", "Eve") else "male"
        reg.submit(
            f"tester-{i}",
            "lims",
            patient("lims", f"lt{i}", given, "Tester", birth=birth, gender=gender, active=False),
        )
    reg.submit(
        "zawadi",
        "lims",
        patient(
            "lims",
            "lz1",
            "Zawadi",
            "Kiprotich",
            birth="1992-11-02",
            gender="female",
            phone="0700111222",
        ),
    )
    reg.submit(
        "baraka", "dhis2", patient("dhis2", "db1", "Baraka", "Mwangi", gender="male", nid="N-777")
    )
    # Two people by their gender, phone, national id and address (102.3 between them: no
    # match), both certain for a Patient with only the name and birth date they share.
    neema = {"given": "Neema", "family": "Wanjiru", "birth": "1988-08-08"}
    reg.submit(
        "neema-a",
        "openmrs",
        patient(
            "openmrs",
            "on1",
            gender="male",
            phone="0711000001",
            nid="N-501",
            address=[{"line": ["1 Hill Rd"], "city": "Gulu", "postalCode": "11111"}],
            **neema,
        ),
    )
    reg.submit(
        "neema-b",
        "dhis2",
        patient(
            "dhis2",
            "dn1",
            gender="female",
            phone="0711999999",
            nid="N-502",
            address=[{"line": ["99 Lake Av"], "city": "Mbarara", "postalCode": "99999"}],
            **neema,
        ),
    )
    reg.submit(
        "spacey",
        "lims",
        patient("lims", "ls1", "\tTabitha", "  Leading Space", gender="female"),
    )
    return reg


def test_the_fixture_links_as_designed(registry: Registry) -> None:
    assert registry.golden("amara-openmrs") == registry.golden("amara-dhis2")
    assert registry.golden("neema-a") != registry.golden("neema-b")
    goldens = {r.golden_id for r in registry.ids.values()}
    assert len(goldens) == len(registry.ids) - 1


# ============================================================================ PIXm


def _params(parameters: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    assert parameters["resourceType"] == "Parameters"
    ids = [
        p["valueReference"]["reference"] for p in parameters["parameter"] if p["name"] == "targetId"
    ]
    identifiers = [
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in parameters["parameter"]
        if p["name"] == "targetIdentifier"
    ]
    return ids, identifiers


def test_pix_by_internal_identifier(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1"))
    assert ids == [
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    ]
    assert sorted(identifiers) == sorted([(NID, "N-123"), (sys_uri("dhis2"), "dx1")])
    assert (sys_uri("openmrs"), "ox1") not in identifiers


def test_pix_target_system_restricts_identifiers_and_ids(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", sys_uri("dhis2")))
    assert identifiers == [(sys_uri("dhis2"), "dx1")]
    assert ids == [
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    ]
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", NID))
    assert identifiers == [(NID, "N-123")]
    assert f"Patient/{registry.golden('amara-openmrs')}" in ids


def test_pix_by_a_shared_identifier_lists_every_record(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(NID, "N-123"))
    assert set(ids) == {
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    }
    assert sorted(identifiers) == sorted([(sys_uri("openmrs"), "ox1"), (sys_uri("dhis2"), "dx1")])


def test_pix_target_in_the_source_system_gives_nothing_but_the_person(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", sys_uri("openmrs")))
    assert identifiers == []
    assert ids == [f"Patient/{registry.golden('amara-openmrs')}"]


@pytest.mark.parametrize(
    ("system", "value", "targets", "status", "code", "text"),
    [
        (sys_uri("openmrs"), "nobody", (), 404, "not-found", "sourceIdentifier Patient"),
        (NID, "N-000", (), 404, "not-found", "sourceIdentifier Patient Identifier not found"),
        ("http://unknown.org/ids", "ox1", (), 400, "code-invalid", "Assigning Authority"),
        (sys_uri("openmrs"), "ox1", ("http://unknown.org",), 403, "code-invalid", "targetSystem"),
        ("http://unknown.org/ids", "x", ("http://unknown.org",), 400, "code-invalid", "Assigning"),
        (sys_uri("openmrs"), "nobody", ("http://unknown.org",), 403, "code-invalid", "target"),
    ],
)
def test_pix_errors(
    registry: Registry,
    system: str,
    value: str,
    targets: tuple[str, ...],
    status: int,
    code: str,
    text: str,
) -> None:
    with pytest.raises(FhirError) as caught:
        registry.pix(system, value, *targets)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert text in caught.value.diagnostics


def test_pix_system_known_from_configuration_without_records(registry: Registry) -> None:
    with pytest.raises(FhirError) as caught:
        registry.pix(sys_uri("lims"), "nobody", sys_uri("openmrs"))
    assert caught.value.status == 404


def test_parse_pix_query() -> None:
    query = parse_pix_query(
        [
            ("sourceIdentifier", "urn:oid:1.2|A\\|1"),
            ("targetSystem", "urn:a"),
            ("targetSystem", "urn:b"),
            ("_format", "json"),
        ]
    )
    assert query == PixQuery("urn:oid:1.2", "A|1", ("urn:a", "urn:b"))


@pytest.mark.parametrize(
    ("pairs", "status"),
    [
        ([], 400),
        ([("sourceIdentifier", "urn:a|1"), ("sourceIdentifier", "urn:a|2")], 400),
        ([("sourceIdentifier", "1")], 400),
        ([("sourceIdentifier", "urn:a|")], 400),
        ([("sourceIdentifier", "urn:a|1,urn:a|2")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("target", "x")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("targetSystem", "")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("_format", "xml")], 406),
    ],
)
def test_parse_pix_query_refuses(pairs: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(FhirError) as caught:
        parse_pix_query(pairs)
    assert caught.value.status == status


# ============================================================================ $match


def _zawadi(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "given": "Zawadi",
        "family": "Kiprotich",
        "birth": "1992-11-02",
        "gender": "female",
        "phone": "0700111222",
    }
    fields.update(changes)
    return patient("", "", **fields)


def test_match_certain(registry: Registry) -> None:
    [(golden, grade, score)] = registry.match(_zawadi())
    assert (golden, grade) == (registry.golden("zawadi"), "certain")
    assert 0.999 < score <= 1.0


def test_match_probable(registry: Registry) -> None:
    # given + family + gender, nothing else: 100 + 2.23 + 2.45 + 0.29 = 104.97
    [(golden, grade, score)] = registry.match(_zawadi(birth=None, phone=None))
    assert (golden, grade) == (registry.golden("zawadi"), "probable")
    assert score == pytest.approx(1 / (1 + 10**-1.9705), abs=1e-3)


def test_match_possible(registry: Registry) -> None:
    # given + family agree, gender disagrees: 100 + 2.23 + 2.45 − 1.22 = 103.46
    [(golden, grade, score)] = registry.match(_zawadi(birth=None, phone=None, gender="male"))
    assert (golden, grade) == (registry.golden("zawadi"), "possible")
    assert 0.5 <= score < 0.9


def test_match_certainly_not_by_a_conflicting_identifier(registry: Registry) -> None:
    # given + family agree, gender and national id disagree: 102.46, below potential
    baraka = patient("", "", "Baraka", "Mwangi", gender="female", nid="N-999")
    assert registry.match(baraka) == [(registry.golden("baraka"), "certainly-not", 0.0)]
    # without the national id: 103.46, a possible match
    without_id = patient("", "", "Baraka", "Mwangi", gender="female")
    assert [grade for _, grade, _ in registry.match(without_id)] == ["possible"]
    # below potential (names agree, birth date and gender do not: 102.16), no identifier
    # system in common: not a match, not returned
    unlike = _zawadi(birth="1950-01-01", gender="male", phone=None)
    assert registry.match(unlike) == []


def test_match_certainly_not_by_a_broken_match(registry: Registry) -> None:
    first = registry.submit(
        "chiku",
        "openmrs",
        patient("openmrs", "or1", "Chiku", "Achieng", birth="2001-01-01", gender="female"),
    )
    other = registry.submit(
        "imani",
        "openmrs",
        patient("openmrs", "os1", "Imani", "Otieno", birth="1999-09-09", gender="female"),
    )
    imani = {"given": "Imani", "family": "Otieno", "birth": "1999-09-09", "gender": "female"}
    assert registry.match(patient("openmrs", "or1", **imani))[0][:2] == (
        other.golden_id,
        "certain",
    )
    with transaction(registry.context.sessions) as session:
        session.add(BrokenMatch.pair(first.record_id, other.record_id))
    # The input is openmrs' record or1, known not to be Imani: certainly-not despite the score.
    assert registry.match(patient("openmrs", "or1", **imani)) == [
        (other.golden_id, "certainly-not", 0.0)
    ]
    # Anyone else with these demographics is Imani.
    assert registry.match(patient("openmrs", "elsewhere", **imani))[0][:2] == (
        other.golden_id,
        "certain",
    )


def test_match_results_are_ordered_and_graded(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    found = registry.match(neema)
    assert {g for g, _, _ in found} == {registry.golden("neema-a"), registry.golden("neema-b")}
    assert [grade for _, grade, _ in found] == ["certain", "certain"]
    assert found[0][2] >= found[1][2]


def test_only_certain_matches_needs_exactly_one_certain_person(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    assert registry.match(neema, only=True) == []
    assert registry.match(_zawadi(), only=True)[0][:2] == (registry.golden("zawadi"), "certain")
    assert registry.match(_zawadi(birth=None, phone=None), only=True) == []


def test_match_count_limits_results(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    assert len(registry.match(neema, count=1)) == 1


def test_match_nothing_similar(registry: Registry) -> None:
    assert registry.match(patient("", "", "Nobody", "Atall", birth="1901-01-01")) == []
    assert registry.match({"resourceType": "Patient"}) == []


def test_match_bundle_for_a_point_of_service_caller(registry: Registry) -> None:
    bundle = registry.match_bundle(_zawadi(), demographics=False)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    [entry] = bundle["entry"]
    resource = entry["resource"]
    assert resource["id"] == registry.golden("zawadi")
    assert entry["fullUrl"] == f"{BASE}/Patient/{registry.golden('zawadi')}"
    assert resource["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert resource["identifier"] == [{"system": sys_uri("lims"), "value": "lz1"}]
    assert not {"name", "birthDate", "gender", "telecom"} & set(resource)
    assert entry["search"]["mode"] == "match"
    assert entry["search"]["extension"] == [
        {"url": "http://hl7.org/fhir/StructureDefinition/match-grade", "valueCode": "certain"}
    ]
    assert 0 <= entry["search"]["score"] <= 1


def test_match_bundle_with_demographics(registry: Registry) -> None:
    bundle = registry.match_bundle(_zawadi(), demographics=True)
    [entry] = bundle["entry"]
    resource = entry["resource"]
    assert resource["id"] == registry.record("zawadi")
    assert resource["name"][0]["family"] == "Kiprotich"
    assert resource["link"] == [
        {"other": {"reference": f"Patient/{registry.golden('zawadi')}"}, "type": "refer"}
    ]


def test_match_bundle_empty(registry: Registry) -> None:
    bundle = registry.match_bundle(patient("", "", "Nobody", "Atall"), demographics=False)
    assert bundle["total"] == 0
    assert "entry" not in bundle


def test_parse_match_request() -> None:
    bare = patient("", "", "A", "B")
    assert parse_match_request(bare) == MatchRequest(bare)
    request = parse_match_request(
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": bare},
                {"name": "onlyCertainMatches", "valueBoolean": True},
                {"name": "count", "valueInteger": 500},
            ],
        }
    )
    assert request == MatchRequest(bare, True, 100)


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({"resourceType": "Observation"}, 400, None),
        ({"resourceType": "Parameters"}, 400, "Parameters.parameter"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 3}]},
            400,
            "Parameters.parameter",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": {"resourceType": "Person"}}],
            },
            400,
            "Parameters.parameter[0].resource",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient", "gender": 3}}
                ],
            },
            400,
            None,
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "count", "valueInteger": 0},
                ],
            },
            400,
            "Parameters.parameter[1].valueInteger",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "onlyCertainMatches", "valueString": "yes"},
                ],
            },
            400,
            "Parameters.parameter[1].valueBoolean",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "threshold", "valueDecimal": 0.5},
                ],
            },
            400,
            "Parameters.parameter[1].name",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                ],
            },
            400,
            "Parameters.parameter[1]",
        ),
    ],
)
def test_parse_match_request_refuses(
    body: dict[str, Any], status: int, expression: str | None
) -> None:
    with pytest.raises(FhirError) as caught:
        parse_match_request(body)
    assert caught.value.status == status
    if expression is not None:
        assert expression in caught.value.expression


# ============================================================================ search


def test_search_family_is_case_and_accent_insensitive_starts_with(registry: Registry) -> None:
    muller = [registry.record("muller")]
    assert registry.found("family=Müller") == muller
    assert registry.found("family=muller") == muller
    assert registry.found("family=MUL") == muller
    assert registry.found("family=ller") == []
    assert registry.found("family:contains=LLER") == muller
    assert registry.found("family:exact=Müller") == muller
    assert registry.found("family:exact=muller") == []
    assert registry.found("given=jurg") == muller
    assert registry.found("name=jürgen") == muller
    assert registry.found("name=muller") == muller


def test_search_ascii_name_finds_accented_and_plain(registry: Registry) -> None:
    assert registry.found("family=okonkwo") == sorted(
        [registry.record("amara-openmrs"), registry.record("amara-dhis2")]
    )


def test_search_accented_value_finds_plain_records(registry: Registry) -> None:
    assert registry.found("family=Okönkwo") == sorted(
        [registry.record("amara-openmrs"), registry.record("amara-dhis2")]
    )


def test_search_values_stored_with_leading_spacing(registry: Registry) -> None:
    spacey = [registry.record("spacey")]
    assert registry.found("family=leading") == spacey
    assert registry.found("family=leading space") == spacey
    assert registry.found("family=LEADING   SPACE") == spacey
    assert registry.found("given=tabi") == spacey
    assert registry.found("family:exact=  Leading Space") == spacey
    assert registry.found("family:contains=space") == spacey


def test_search_strings_or_and_and(registry: Registry) -> None:
    testers = sorted(registry.record(f"tester-{i}") for i in range(5))
    assert registry.found("family=Tester") == testers
    assert registry.found("family=Tester&given=Anna,Ben") == sorted(
        [registry.record("tester-0"), registry.record("tester-1")]
    )
    assert registry.found("family=Tester&given=Anna&given=Ben") == []


def test_search_family_and_gender(registry: Registry) -> None:
    assert registry.found("family=Tester&gender=female") == sorted(
        registry.record(f"tester-{i}") for i in (0, 2, 4)
    )
    assert registry.found(
        "family=Tester&gender=http://hl7.org/fhir/administrative-gender|male"
    ) == sorted(registry.record(f"tester-{i}") for i in (1, 3))


def test_search_birthdate_and_family(registry: Registry) -> None:
    assert registry.found("family=Tester&birthdate=1960-02-02") == [registry.record("tester-1")]
    assert registry.found("family=Tester&birthdate=1960") == [registry.record("tester-1")]
    assert registry.found("family=Tester&birthdate=1960-02-03") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("birthdate=ge1982-04-04", [3, 4]),
        ("birthdate=gt1982-04-04", [4]),
        ("birthdate=le1960-02-02", [0, 1]),
        ("birthdate=lt1960-02-02", [0]),
        ("birthdate=ne1960-02-02", [0, 2, 3, 4]),
        ("birthdate=sa1982", [4]),
        ("birthdate=eb1960-03", [0, 1]),
        ("birthdate=1950,1993", [0, 4]),
        ("birthdate=ge1960&birthdate=lt1980", [1, 2]),
    ],
)
def test_search_birthdate_prefixes(registry: Registry, query: str, expected: list[int]) -> None:
    assert registry.found(f"family=Tester&{query}") == sorted(
        registry.record(f"tester-{i}") for i in expected
    )


def test_search_partial_birth_dates(registry: Registry) -> None:
    muller = [registry.record("muller")]  # born 1970-06 (month precision)
    assert registry.found("family=Müller&birthdate=1970") == muller
    assert registry.found("family=Müller&birthdate=1970-06") == muller
    assert registry.found("family=Müller&birthdate=1970-06-15") == []
    assert registry.found("family=Müller&birthdate=ge1970-06-15") == muller
    assert registry.found("family=Müller&birthdate=lt1970-06-15") == muller
    assert registry.found("family=Müller&birthdate=gt1970-06") == []


def test_search_identifier(registry: Registry) -> None:
    amara = sorted([registry.record("amara-openmrs"), registry.record("amara-dhis2")])
    assert registry.found(f"identifier={NID}|N-123") == amara
    assert registry.found("identifier=N-123") == amara
    assert registry.found(f"identifier={sys_uri('openmrs')}|ox1") == [
        registry.record("amara-openmrs")
    ]
    assert registry.found(f"identifier={sys_uri('openmrs')}|OX1") == []
    assert registry.found(f"identifier={NID}|N-123&identifier={sys_uri('dhis2')}|") == [
        registry.record("amara-dhis2")
    ]
    assert registry.found("identifier=|N-123") == []


def test_search_index_edges(registry: Registry) -> None:
    """Values cut in the token index, characters beyond the BMP, dates without a family."""
    long_family = "Zq" + "x" * 250
    long = registry.submit(
        "edge-long",
        "openmrs",
        patient("openmrs", "edge-1", "Edge", long_family, birth="1901-01-01", gender="male"),
    ).record_id
    emoji = registry.submit(
        "edge-emoji",
        "dhis2",
        patient("dhis2", "edge-2", "Edgé", "Zq\U0001f600 Ü", birth="1901-02", gender="female"),
    ).record_id
    both = sorted([long, emoji])
    assert registry.found("family=zq") == both
    assert registry.found("family=ZQ" + "X" * 240) == [long]
    assert registry.found(f"family={long_family}") == [long]
    assert registry.found(f"family={long_family}x") == []
    assert registry.found(f"family:exact={long_family}") == [long]
    assert registry.found("family=zq\U0001f600") == [emoji]
    assert registry.found("family=zq\U0001f600 u") == [emoji]
    assert registry.found("family:contains=\U0001f600") == [emoji]
    assert registry.found("given=edge") == both
    assert registry.found("given:exact=Edgé") == [emoji]
    assert registry.found("birthdate=1901") == both
    assert registry.found("birthdate=1901-01") == [long]
    assert registry.found("birthdate=1901-02-01") == []
    assert registry.found("birthdate=le1901-12-31&given=edge") == both
    assert registry.found("birthdate=lt1901-02&given=edge") == [long]
    assert registry.found("birthdate=ge1901-02-01&given=edge") == [emoji]
    assert registry.found("birthdate=ne1901-01-01&given=edge") == [emoji]
    assert registry.found("identifier=edge-2") == [emoji]
    assert registry.found(f"identifier={sys_uri('dhis2')}|edge-2") == [emoji]
    assert registry.found(f"identifier={sys_uri('openmrs')}|edge-2") == []


def test_search_identifier_system_restricts_returned_identifiers(registry: Registry) -> None:
    bundle = registry.search(f"identifier={NID}|N-123&identifier={NID}|")
    for entry in bundle["entry"]:
        assert entry["resource"]["identifier"] == [{"system": NID, "value": "N-123"}]
    bundle = registry.search(f"identifier={NID}|N-123")
    assert len(bundle["entry"][0]["resource"]["identifier"]) == 2


def test_search_telecom_address_and_more(registry: Registry) -> None:
    muller = [registry.record("muller")]
    assert registry.found("telecom=0700111222") == [registry.record("zawadi")]
    assert registry.found("telecom=phone|0700111222") == [registry.record("zawadi")]
    assert registry.found("telecom=email|0700111222") == []
    assert registry.found("address-city=kamp") == muller
    assert registry.found("address-postalcode=256") == muller
    assert registry.found("address=plot 5") == muller
    assert registry.found("address=kampala") == muller
    assert registry.found("address:exact=Kampala") == muller
    assert registry.found("address-city=Entebbe") == []
    assert registry.found("mothersMaidenName=nak") == muller
    assert registry.found("active=true") == muller
    assert registry.found("active=false&given=Anna") == [registry.record("tester-0")]


def test_search_by_id_finds_source_and_golden_records(registry: Registry) -> None:
    record, golden = registry.record("zawadi"), registry.golden("zawadi")
    assert registry.found(f"_id={record}") == [record]
    assert registry.found(f"_id={golden}") == [golden]
    assert registry.found(f"_id={record},{golden}") == sorted([record, golden])
    assert registry.found(f"_id={record},{golden}&_id={golden}") == [golden]
    assert registry.found(f"_id={golden}&family=Kiprotich") == []
    assert registry.found(f"_id={record}&family=Kiprotich") == [record]
    assert registry.found("_id=nothing-here") == []


def test_search_include_link_adds_golden_records(registry: Registry) -> None:
    bundle = registry.search(f"identifier={sys_uri('openmrs')}|ox1&_include=Patient:link")
    modes = [(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]]
    assert modes == [
        ("match", registry.record("amara-openmrs")),
        ("include", registry.golden("amara-openmrs")),
    ]
    golden = bundle["entry"][1]["resource"]
    assert golden["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert bundle["total"] == 1


def test_search_include_link_of_a_golden_record_adds_its_source_records(
    registry: Registry,
) -> None:
    golden = registry.golden("amara-openmrs")
    bundle = registry.search(f"_id={golden}&_include=Patient:link")
    modes = [(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]]
    assert modes[0] == ("match", golden)
    assert sorted(modes[1:]) == sorted(
        [
            ("include", registry.record("amara-openmrs")),
            ("include", registry.record("amara-dhis2")),
        ]
    )


def test_search_summary_count(registry: Registry) -> None:
    bundle = registry.search("family=Tester&_summary=count")
    assert bundle["total"] == 5
    assert "entry" not in bundle
    assert registry.search("_summary=count")["total"] == len(registry.ids)
    assert registry.search("family=Tester&_count=0")["total"] == 5


def _next(bundle: dict[str, Any]) -> str | None:
    for link in bundle["link"]:
        if link["relation"] == "next":
            url = urlsplit(link["url"])
            assert url.path == "/fhir/Patient"
            return url.query
    return None


def test_search_paging_follows_next_links(registry: Registry) -> None:
    seen: list[str] = []
    query: str | None = "_count=3"
    pages = 0
    while query is not None:
        bundle = registry.search(query)
        ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
        assert len(ids) <= 3
        seen += ids
        pages += 1
        if pages == 1:
            assert "total" not in bundle  # not known without reading everything
        query = _next(bundle)
        if query is not None:
            assert ("_count", "3") in parse_qsl(query)
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == len(registry.ids)
    assert pages == -(-len(registry.ids) // 3)


def test_search_paging_with_a_filter(registry: Registry) -> None:
    first = registry.search("family=Tester&_count=2")
    assert len(first["entry"]) == 2
    second = registry.search(_next(first) or "")
    third = registry.search(_next(second) or "")
    assert _next(third) is None
    ids = [e["resource"]["id"] for b in (first, second, third) for e in b["entry"]]
    assert ids == sorted(registry.record(f"tester-{i}") for i in range(5))
    assert first["link"][0] == {"relation": "self", "url": f"{BASE}/Patient?family=Tester&_count=2"}


def test_search_first_page_that_is_complete_has_a_total(registry: Registry) -> None:
    bundle = registry.search("family=Tester")
    assert bundle["total"] == 5
    assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_search_returns_source_records_as_read(registry: Registry) -> None:
    bundle = registry.search("family=Kiprotich")
    [entry] = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Patient/{registry.record('zawadi')}"
    resource = entry["resource"]
    assert resource["meta"]["tag"][0]["code"] == "lims"
    assert resource["link"][0]["other"]["reference"] == f"Patient/{registry.golden('zawadi')}"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("foo=bar", 400, "not-supported"),
        ("_sort=family", 400, "not-supported"),
        ("family:phonetic=x", 400, "not-supported"),
        ("identifier:of-type=x", 400, "not-supported"),
        ("birthdate=ap1970", 400, "not-supported"),
        ("birthdate=1970-13", 400, "invalid"),
        ("birthdate=19700101", 400, "invalid"),
        ("birthdate=1970-02-30", 400, "invalid"),
        ("active=yes", 400, "invalid"),
        ("family=", 400, "invalid"),
        ("_count=-1", 400, "invalid"),
        ("_count=1&_count=2", 400, "invalid"),
        ("_summary=true", 400, "not-supported"),
        ("_include=Patient:general-practitioner", 400, "not-supported"),
        ("_format=xml", 406, "not-supported"),
    ],
)
def test_search_refuses(query: str, status: int, code: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_patient_query(query_pairs(query))
    assert (caught.value.status, caught.value.code) == (status, code)


def test_parse_patient_query_keeps_pairs_for_links() -> None:
    query = parse_patient_query(
        [("family", "a"), ("_cursor", "x"), ("_count", "500"), ("birthdate", "ge1970,le1960")]
    )
    assert query.count == 100
    assert query.cursor == "x"
    assert query.pairs == (("family", "a"), ("_count", "500"), ("birthdate", "ge1970,le1960"))


def test_string_and_date_matching_rules() -> None:
    assert string_matches("", "nuñ", "Núñez")
    assert string_matches("", "van  der", "Van der Berg")
    assert not string_matches("", "der", "Van der Berg")
    assert string_matches("contains", "der", "Van der Berg")
    assert not string_matches("exact", "van der berg", "Van der Berg")
    year = parse_date_value("1970")
    day = parse_date_value("1970-06-15")
    assert date_matches("eq", (year.start, year.end), (day.start, day.end))
    assert not date_matches("eq", (day.start, day.end), (year.start, year.end))
    assert date_matches("ge", (day.start, day.end), (year.start, year.end))


# ============================================================================ audit


def test_record_lookup_writes_an_audit_event(registry: Registry) -> None:
    record_lookup(
        registry.context,
        Caller("openmrs", "127.0.0.1"),
        action=AuditAction.EXECUTE,
        interaction="operation",
        iti="ITI-83",
        entity="Patient/abc",
        detail={"query": "sourceIdentifier=a|b"},
    )
    with transaction(registry.context.sessions, write=False) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.entity == "Patient/abc")).one()
    assert event.action == AuditAction.EXECUTE
    assert event.event_type == "operation"
    assert event.detail == {"transaction": "ITI-83", "query": "sourceIdentifier=a|b"}
    assert event.resource is not None
    assert event.resource["subtype"][0]["code"] == "operation"
