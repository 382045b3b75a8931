"""Issue #11 item 6: search that real clients can page and sort, over HTTPS.

``Bundle.total`` on every page with ``_total=accurate`` (and by default when cheap);
``_lastUpdated`` with prefixes; ``_sort`` by ``_lastUpdated``, ``family``, ``given``,
``birthdate`` (``-`` descending); ``_elements``; ``deceased``; unknown parameters ignored
with a warning under ``Prefer: handling=lenient`` (the default) and left out of the ``self``
link, 400 under ``handling=strict``; an unknown identifier domain gives an empty Bundle with
a warning (ITI-78 Case 4); a merged match brings its survivor (Case 6).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from standards import id_system

GIVEN = ["Zola", "Abel", "Mina", "Bram", "Kofi", "Eda", "Ivo"]
BORN = [
    "1971-05-01",
    "1990-01-09",
    "1965-12-31",
    "2001-07-04",
    "1984-03-03",
    "1999-10-10",
    "1950-06-06",
]


@pytest.fixture(scope="module")
def family(registry_server, fhir) -> dict[str, Any]:
    """Seven people of one made-up family, submitted one after another; the time between the
    fourth and the fifth."""
    name = fhir.token("Fam").capitalize()
    ids: list[str] = []
    middle = ""
    for number, (given, born) in enumerate(zip(GIVEN, BORN, strict=True)):
        system = ("openmrs", "dhis2", "lims")[number % 3]
        patient = fhir.patient(
            system,
            demographics={
                "name": [{"use": "official", "family": name, "given": [given]}],
                "gender": "female",
                "birthDate": born,
            },
        )
        if given == "Mina":
            patient["deceasedDateTime"] = "2020-02-02T10:00:00Z"
        if given == "Ivo":
            patient["deceasedBoolean"] = True
        if given == "Kofi":
            patient["deceasedBoolean"] = False
        response = registry_server.submit(system, patient)
        assert response.status_code == 201, response.text
        ids.append(fhir.ids(response)[0])
        if number == 3:
            time.sleep(0.05)
            middle = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            time.sleep(0.05)
    return {"name": name, "ids": ids, "middle": middle}


def search(
    server: Any, params: dict[str, str], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = server.client("hie").get("/fhir/Patient", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def pages(server: Any, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every page, following ``next`` links."""
    out = [search(server, params)]
    while True:
        links = {link["relation"]: link["url"] for link in out[-1]["link"]}
        if "next" not in links:
            return out
        url = urlsplit(links["next"])
        assert url.path == "/fhir/Patient"
        out.append(search(server, dict(parse_qsl(url.query))))


def test_total_on_every_page_when_asked(registry_server, family) -> None:
    every = pages(registry_server, {"family": family["name"], "_count": "2", "_total": "accurate"})
    assert len(every) == 4
    assert [b["total"] for b in every] == [7, 7, 7, 7]
    found = [r["id"] for b in every for r in matches(b)]
    assert sorted(found) == sorted(family["ids"])
    # cheap by default (few candidates): still on every page; never with _total=none
    assert [
        b.get("total") for b in pages(registry_server, {"family": family["name"], "_count": "3"})
    ] == [7, 7, 7]
    assert "total" not in search(registry_server, {"family": family["name"], "_total": "none"})


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("birthdate", sorted(range(7), key=lambda i: BORN[i])),
        ("-birthdate", sorted(range(7), key=lambda i: BORN[i], reverse=True)),
        ("given", sorted(range(7), key=lambda i: GIVEN[i])),
        ("-given", sorted(range(7), key=lambda i: GIVEN[i], reverse=True)),
        ("family,-given", sorted(range(7), key=lambda i: GIVEN[i], reverse=True)),
        ("_lastUpdated", list(range(7))),
        ("-_lastUpdated", list(reversed(range(7)))),
    ],
)
def test_sort_across_pages(registry_server, family, sort: str, expected: list[int]) -> None:
    every = pages(registry_server, {"family": family["name"], "_sort": sort, "_count": "3"})
    found = [r["id"] for b in every for r in matches(b)]
    assert found == [family["ids"][i] for i in expected]
    assert all(b["total"] == 7 for b in every)
    assert all("_sort" in b["link"][0]["url"] for b in every)


def test_last_updated_with_prefixes(registry_server, family) -> None:
    later = matches(
        search(registry_server, {"family": family["name"], "_lastUpdated": f"ge{family['middle']}"})
    )
    assert sorted(r["id"] for r in later) == sorted(family["ids"][4:])
    earlier = matches(
        search(registry_server, {"family": family["name"], "_lastUpdated": f"lt{family['middle']}"})
    )
    assert sorted(r["id"] for r in earlier) == sorted(family["ids"][:4])
    today = datetime.now(UTC).date().isoformat()
    assert (
        len(matches(search(registry_server, {"family": family["name"], "_lastUpdated": today})))
        == 7
    )
    assert (
        matches(search(registry_server, {"family": family["name"], "_lastUpdated": "lt2001"})) == []
    )


def test_elements_and_deceased(registry_server, family) -> None:
    bundle = search(registry_server, {"family": family["name"], "_elements": "name"})
    for resource in matches(bundle):
        assert set(resource) <= {"resourceType", "id", "meta", "name"}, resource
        assert "SUBSETTED" in {t["code"] for t in resource["meta"]["tag"]}
    dead = matches(search(registry_server, {"family": family["name"], "deceased": "true"}))
    assert sorted(r["id"] for r in dead) == sorted([family["ids"][2], family["ids"][6]])
    alive = matches(search(registry_server, {"family": family["name"], "deceased": "false"}))
    assert len(alive) == 5
    died = matches(search(registry_server, {"family": family["name"], "death-date": "2020-02"}))
    assert [r["id"] for r in died] == [family["ids"][2]]


def test_unknown_parameters_lenient_and_strict(registry_server, family) -> None:
    params = {"family": family["name"], "nickname": "x", "_sort": "gender", "_count": "50"}
    bundle = search(registry_server, params)
    assert len(matches(bundle)) == 7  # the known filter still applies
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and outcome[0]["fullUrl"].startswith("urn:uuid:")
    issues = outcome[0]["resource"]["issue"]
    assert {i["severity"] for i in issues} == {"warning"}
    said = " ".join(i["diagnostics"] for i in issues)
    assert "nickname" in said and "_sort" in said
    self_link = bundle["link"][0]["url"]
    assert "nickname" not in self_link and "_sort" not in self_link and "family=" in self_link
    lenient = search(registry_server, params, {"Prefer": "handling=lenient"})
    assert len(matches(lenient)) == 7
    strict = registry_server.client("hie").get(
        "/fhir/Patient", params=params, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400, strict.text


def test_an_unknown_identifier_domain_gives_an_empty_bundle_with_a_warning(
    registry_server, family
) -> None:
    for value in ("urn:oid:9.9.9.9|", "urn:oid:9.9.9.9|123"):
        bundle = search(registry_server, {"family": family["name"], "identifier": value})
        assert bundle["total"] == 0
        assert matches(bundle) == []
        [outcome] = [e["resource"] for e in bundle["entry"]]
        assert outcome["issue"][0] == {
            "severity": "warning",
            "code": "not-found",
            "diagnostics": "targetSystem not found",
            "expression": ["identifier=urn:oid:9.9.9.9|"],
        }
    known = search(registry_server, {"identifier": f"{id_system('openmrs')}|" + "nobody"})
    assert known["total"] == 0 and "entry" not in known


def test_a_merged_match_brings_its_survivor(registry_server, fhir) -> None:
    person = fhir.person()
    survivor = registry_server.submit("openmrs", fhir.patient("openmrs", demographics=person))
    s_id, _ = fhir.ids(survivor)
    value = fhir.token()
    other = dict(person, name=[{"family": fhir.token("Gone").capitalize(), "given": ["Old"]}])
    registry_server.submit("openmrs", fhir.patient("openmrs", value, other))
    resolve = fhir.patient("openmrs", value, other, active=False)
    resolve["link"] = [{"other": {"reference": f"Patient/{s_id}"}, "type": "replaced-by"}]
    assert registry_server.submit("openmrs", resolve).status_code == 200
    bundle = search(registry_server, {"family": other["name"][0]["family"]})
    [merged] = matches(bundle)
    assert merged["active"] is False
    included = [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert included == [s_id]
