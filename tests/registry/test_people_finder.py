"""Finding people (registry.people_finder): fuzzy names, exact criteria in SQL, CRUIDs and
record ids, paging, and bad criteria refused."""

from __future__ import annotations

import pytest
from desk import RITA
from test_links import AISHA, JOHN, PETER, Registry, patient

from clientregistry.registry.actor import Refused
from clientregistry.registry.people_finder import PeopleQuery, find_people, name_score


def _fill(desk: Registry) -> dict[str, str]:
    """Aisha (openmrs and dhis2, one person), John (lims), Peter (dhis2), and Grace."""
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA, national_id="NIN-1"))
    b = desk.submit("dhis2", patient("dhis2", "2", "Aysha", "Nakato"))
    j = desk.submit("lims", patient("lims", "5", "John", "Okello", **JOHN))
    p = desk.submit("dhis2", patient("dhis2", "9", "Peter", "Mukasa", **PETER))
    assert a.golden_id == b.golden_id
    return {"aisha": a.golden_id, "john": j.golden_id, "peter": p.golden_id, "b": b.record_id}


def _find(desk: Registry, offset: int = 0, limit: int = 20, **criteria: str) -> list[str]:
    page = find_people(desk.context, RITA, PeopleQuery(**criteria), offset, limit)
    return [hit.golden_id for hit in page.items]


def test_a_misspelled_name_finds_the_person(desk: Registry) -> None:
    ids = _fill(desk)
    page = find_people(desk.context, RITA, PeopleQuery(name="nakatto aisha"), 0, 20)
    (hit,) = page.items
    assert hit.golden_id == ids["aisha"]
    assert hit.records == 2 and hit.systems == ["dhis2", "openmrs"]
    assert hit.score is not None and hit.score > 0.85
    assert _find(desk, name="Okelo") == [ids["john"]]
    assert _find(desk, name="Smith") == []


def test_exact_criteria_and_their_combinations(desk: Registry) -> None:
    ids = _fill(desk)
    assert _find(desk, birth_date="1990-05-05") == [ids["john"]]
    assert _find(desk, birth_date="1984-01") == [ids["aisha"]]
    assert _find(desk, birth_date="1971") == [ids["peter"]]
    assert _find(desk, identifier="NIN-1") == [ids["aisha"]]
    assert _find(desk, identifier="NIN-1", identifier_system="http://example.org/other") == []
    assert _find(desk, identifier="NIN-1", identifier_system="http://example.org/national-id") == [
        ids["aisha"]
    ]
    assert _find(desk, system="dhis2", birth_date="1971") == [ids["peter"]]
    assert _find(desk, system="lims", birth_date="1990", gender="male") == [ids["john"]]
    assert _find(desk, system="lims", birth_date="1990", gender="female") == []
    # One record must meet every criterion: Aisha's lims record does not exist.
    assert _find(desk, name="Aisha", system="lims") == []


def test_a_cruid_or_record_id_finds_its_person(desk: Registry) -> None:
    ids = _fill(desk)
    assert _find(desk, cruid=ids["aisha"]) == [ids["aisha"]]
    assert _find(desk, cruid=ids["b"]) == [ids["aisha"]]
    assert _find(desk, cruid="nothing-like-it") == []
    assert _find(desk, cruid=ids["aisha"], gender="male") == []


def test_pages(desk: Registry) -> None:
    _fill(desk)
    for n, (given, family) in enumerate([("Zed", "Abel"), ("Quin", "Ovid")]):
        desk.submit("lims", patient("lims", f"p{n}", given, family, **PETER))
    everyone = _find(desk, birth_date="1971")
    assert len(everyone) == 3 and everyone == sorted(everyone)
    assert _find(desk, 0, 2, birth_date="1971") + _find(desk, 2, 2, birth_date="1971") == everyone
    page = find_people(desk.context, RITA, PeopleQuery(birth_date="1971"), 0, 2)
    assert page.total == 3 and not page.capped


def test_no_criteria_is_an_empty_page_not_a_refusal(desk: Registry) -> None:
    _fill(desk)
    page = find_people(desk.context, RITA, PeopleQuery(), 0, 20)
    assert page.items == [] and page.total == 0


@pytest.mark.parametrize(
    ("criteria", "code"),
    [
        ({"birth_date": "5 May 1990"}, "bad-date"),
        ({"gender": "f"}, "bad-gender"),
        ({"gender": "female"}, "gender"),
        ({"system": "nosuch", "name": "x"}, "bad-system"),
        ({"system": "lims"}, "system-alone"),
        ({"system": "lims", "gender": "male"}, "system-alone"),
        ({"identifier_system": "http://x"}, "bad-identifier"),
        ({"name": "x" * 300}, "too-long"),
    ],
)
def test_bad_criteria_are_refused(desk: Registry, criteria: dict[str, str], code: str) -> None:
    with pytest.raises(Refused) as refused:
        find_people(desk.context, RITA, PeopleQuery(**criteria), 0, 20)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_name_score_is_order_and_accent_blind() -> None:
    resource = {"name": [{"given": ["Aïsha"], "family": "Nakato"}]}
    assert name_score(["nakato", "aisha"], resource) == pytest.approx(1.0)
    assert name_score(["nakato"], {"name": []}) == 0.0
