"""Tests of FHIRPath checking and compilation: strict syntax, and fast path == fhirpathpy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientregistry.matching import fhirpath
from clientregistry.matching.fhirpath import (
    FhirPathError,
    check_syntax,
    compile_path,
    compile_reference,
)

# ----------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        "name..given",
        "(name.given",
        "name.given)",
        "name.where(use='official'",
        "name.where(use='official').given)",
        "name.given junk",
        "name.given.",
        ".name",
        "name.given = ",
        "name.where(use='official)",
    ],
)
def test_check_syntax_rejects_broken_expressions(expression: str) -> None:
    with pytest.raises(FhirPathError):
        check_syntax(expression)
    with pytest.raises(FhirPathError):
        compile_path(expression)


def test_fhirpath_error_is_a_value_error_with_a_position() -> None:
    with pytest.raises(ValueError, match="column") as caught:
        check_syntax("name.given junk")
    assert isinstance(caught.value, FhirPathError)
    assert "junk" in str(caught.value)


@pytest.mark.parametrize(
    "expression",
    [
        "birthDate",
        "name.where(use='official').given",
        "name.where(use = 'official' and family = 'x').given",
        "telecom.where(system='phone').value",
        "identifier.where(system='http://x.org/id').value",
        "name.first().given",
        "Patient.name.given",
        "name.given.first() + ' ' + name.family.first()",
        "name.given.exists()",
        "identifier.where(system.startsWith('http')).value",
    ],
)
def test_check_syntax_accepts_valid_expressions(expression: str) -> None:
    check_syntax(expression)
    compile_path(expression)


@pytest.mark.parametrize("expression", ["name.foo()", "foo()", "name.given.bogus()"])
def test_unknown_function_raises_fhirpath_error_from_compile_path(expression: str) -> None:
    with pytest.raises(FhirPathError, match="unknown function"):
        compile_path(expression)


def test_function_names_inside_strings_are_not_calls() -> None:
    compile_path("name.where(use='foo()').given")
    compile_path("identifier.where(system='http://x.org/bogus(1)').value")


# ----------------------------------------------------------------------------- fast path

SIMPLE_EXPRESSIONS = [
    "birthDate",
    "gender",
    "name.given",
    "name.where(use='official').given",
    "name.where(use='official').family",
    "name.first().given",
    "name.last().family",
    "telecom.where(system='phone').value",
    "identifier.where(system='http://x.org/id').value",
    "address.first().line",
    "active",
]


@pytest.mark.parametrize("expression", SIMPLE_EXPRESSIONS)
def test_simple_expressions_take_the_fast_path(expression: str) -> None:
    assert fhirpath._fast_path(expression) is not None


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.given",  # starts with a type name
        "name.given.exists()",
        "name.where(use='official' or use='usual').given",
        "name.given.first() + name.family",
        "identifier.where(system.startsWith('http')).value",
    ],
)
def test_other_expressions_use_fhirpathpy(expression: str) -> None:
    assert fhirpath._fast_path(expression) is None


def test_fast_path_examples() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {"use": "usual", "given": ["Nam"], "family": "G"},
            {"use": "official", "given": ["Namaalwa", "Emmanuel"], "family": "Gideon"},
        ],
        "telecom": [{"system": "email", "value": "a@b.c"}, {"system": "phone", "value": "774"}],
    }
    assert compile_path("name.where(use='official').given")(patient) == ["Namaalwa", "Emmanuel"]
    assert compile_path("name.first().given")(patient) == ["Nam"]
    assert compile_path("name.last().family")(patient) == ["Gideon"]
    assert compile_path("name.given")(patient) == ["Nam", "Namaalwa", "Emmanuel"]
    assert compile_path("telecom.where(system='phone').value")(patient) == ["774"]
    assert compile_path("birthDate")(patient) == []


# ----------------------------------------------------------------------------- property

_words = st.sampled_from(["Ann", "Bob", "Émile", "o'neil", "", " x ", "Namaalwa", "Gideon"])
_uses = st.sampled_from(["official", "usual", "nickname", "Official", "old"])
_systems = st.sampled_from(["phone", "email", "sms", "http://x.org/id", "http://y.org/id"])


def _optional(key: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``{key: value}`` or ``{}``."""
    return st.one_of(st.just({}), strategy.map(lambda value: {key: value}))


def _object(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def merge(dicts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in dicts:
            out.update(d)
        return out

    return st.tuples(*parts).map(merge)


_human_name = _object(
    _optional("use", _uses),
    _optional("family", _words),
    # a list as FHIR wants, or (sloppy input) a bare string
    _optional("given", st.one_of(st.lists(_words, max_size=3), _words)),
    _optional("text", _words),
)
_contact_point = _object(
    _optional("system", _systems),
    _optional("value", st.sampled_from(["+256 772 410 233", "0772410233", "a@b.c", "", 42])),
    _optional("use", st.sampled_from(["home", "mobile"])),
)
_identifier = _object(
    _optional("system", _systems),
    _optional("value", st.sampled_from(["12349", "CF-219", "x", ""])),
    _optional("use", st.sampled_from(["official", "usual"])),
)
_address = _object(
    _optional("line", st.lists(_words, max_size=3)),
    _optional("period", st.just({"start": "2001-05-06"})),
    _optional("city", _words),
    _optional("postalCode", st.sampled_from(["256", "00100"])),
)

PATIENTS = _object(
    st.just({"resourceType": "Patient"}),
    _optional("birthDate", st.sampled_from(["1974-12-25", "1974", "2001-02-03T04:05:06Z"])),
    _optional("gender", st.sampled_from(["male", "female", "other", "unknown"])),
    _optional("active", st.booleans()),
    # a list as FHIR wants, or (sloppy input) a single object
    _optional("name", st.one_of(st.lists(_human_name, max_size=3), _human_name)),
    _optional("telecom", st.lists(_contact_point, max_size=3)),
    _optional("identifier", st.lists(_identifier, max_size=3)),
    _optional("address", st.lists(_address, max_size=2)),
)

_COMPILED = [(e, compile_path(e), compile_reference(e)) for e in SIMPLE_EXPRESSIONS]


@settings(max_examples=200, deadline=None)
@given(PATIENTS)
def test_fast_path_equals_fhirpathpy(patient: dict[str, Any]) -> None:
    for expression, fast, reference in _COMPILED:
        assert fast(patient) == reference(patient), expression


def test_fast_path_equals_fhirpathpy_on_demo_patients(reference_dir: Any) -> None:
    import json

    files = sorted((reference_dir / "opencr" / "DemoData").glob("*.json"))
    assert files
    for path in files:
        patient = json.loads(path.read_text(encoding="utf-8"))
        for expression, fast, reference in _COMPILED:
            assert fast(patient) == reference(patient), (path.name, expression)


# ----------------------------------------------------------------------------- generated extraction

_EXTRACTION_FIELDS: dict[str, dict[str, Any]] = {
    # simple paths sharing prefixes (name.first(), address.first()), of every value type
    "given": {"algorithm": "exact", "fhirpath": "name.first().given"},
    "family": {"algorithm": "exact", "fhirpath": "name.first().family"},
    "last_given": {"algorithm": "exact", "fhirpath": "name.first().given.last()"},
    "official": {"algorithm": "exact", "fhirpath": "name.where(use='official').given"},
    "all_given": {"algorithm": "exact", "fhirpath": "name.given"},
    "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
    "gender": {"algorithm": "exact", "fhirpath": "gender"},
    "active": {"algorithm": "exact", "fhirpath": "active"},
    "phone": {"algorithm": "exact", "fhirpath": "telecom.where(system='phone').value"},
    "phone_code": {
        "algorithm": "exact",
        "fhirpath": "telecom.where(system='phone').value",
        "valueType": "code",
    },
    "id": {"algorithm": "exact", "fhirpath": "identifier.where(system='http://x.org/id').value"},
    "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
    "line": {"algorithm": "exact", "fhirpath": "address.first().line"},
    "city": {"algorithm": "exact", "fhirpath": "address.first().city"},
    "postal": {"algorithm": "exact", "fhirpath": "address.first().postalCode", "valueType": "code"},
    # steps on the resource itself
    "rooted": {"algorithm": "exact", "fhirpath": "first().name.family"},
    "filtered": {"algorithm": "exact", "fhirpath": "where(gender='male').birthDate"},
    # not simple: evaluated by fhirpathpy
    "either": {
        "algorithm": "exact",
        "fhirpath": "name.where(use='official' or use='usual').given",
    },
}


def _extractor(record_id_systems: tuple[str, ...] = ()) -> Any:
    from clientregistry.matching.features import FeatureExtractor
    from clientregistry.matching.rules import parse_rules

    rules = parse_rules(
        {
            "rules": [
                {
                    "matchingType": "deterministic",
                    "fields": _EXTRACTION_FIELDS,
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 1,
                }
            ]
        }
    )
    return FeatureExtractor(rules, record_id_systems)


_EXTRACTORS = [_extractor(), _extractor(("http://y.org/id",))]


@settings(max_examples=300, deadline=None)
@given(PATIENTS)
def test_generated_extraction_equals_the_evaluators(patient: dict[str, Any]) -> None:
    for extractor in _EXTRACTORS:
        assert extractor.extract(patient) == extractor.extract_slowly(patient)


def test_generated_extraction_of_odd_resources() -> None:
    odd: list[Any] = [
        {},
        {"name": None, "birthDate": None},
        {"name": [None, {"given": [None, "Ann", None]}]},
        {"name": {"given": "Bob", "family": "Lee"}},  # an object where a list belongs
        {"name": ["not an object"], "address": [3, {"line": "7 Main St"}]},
        {"gender": "male", "birthDate": "1974-13-01", "active": False},
        {"identifier": [{"system": "http://y.org/id", "value": "1"}, {"value": "2"}]},
    ]
    for extractor in _EXTRACTORS:
        for resource in odd:
            assert extractor.extract(resource) == extractor.extract_slowly(resource), resource


def test_generated_extraction_source_is_kept() -> None:
    source = _EXTRACTORS[0]._extract.__source__
    # name.first() once for the three paths under it, address.first() once for its two,
    # first() on the resource once
    assert source.count("[:1]") == 3
