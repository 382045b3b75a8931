"""The registry the lookup tests read (``tests/registry/conftest.py`` gives it as the fixture
``registry``): PIXm cross-references, $match grades, Patient search, the audit of a lookup.

One registry (SQLite, default decision rules) is filled once per test module with a few
people; the tests only read it, except those that add their own people. Fewer than 50 records
are stored, so term frequencies stay off and scores are the rules' plain weights:
given 2.23, family 2.45, birth date 3.63, gender 0.29 (disagreeing −1.22), phone 3.90,
identifier 3.95 (disagreeing −1.00), city / postal code / address line disagreeing
−0.99 / −0.99 / −0.82; potential 103, auto 105.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clientregistry.fhir.search_params import query_pairs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.person_match import (
    MatchRequest,
    match_bundle,
    match_people,
    select_matches,
)
from clientregistry.registry.pix import PixQuery, cross_reference
from clientregistry.registry.search import search
from clientregistry.registry.search_query import PatientQuery, parse_patient_query
from clientregistry.registry.submit import SubmitResult, Submitter
from clientregistry.store.db import transaction

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


def fill(reg: Registry) -> Registry:
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
