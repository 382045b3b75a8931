"""Tests of the two-process dedupe pipeline: the same clusters, whoever blocks and scores."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from clientregistry.batch.dedupe import Deduplicator
from clientregistry.batch.pipeline import Prepared, Reader, prepare_in_background
from clientregistry.batch.readers import CsvMapping, SourceRecord, read_patients
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
from clientregistry.errors import InvalidRecord
from clientregistry.matching.matcher import Matcher, PreparedRecord
from clientregistry.matching.rules import default_rules
from clientregistry.matching.scoring import PairScore

GIVEN = ["Nakato", "Okello", "Namaalwa", "Emmanuel", "Sarah", "Sara", "John", "Jon", "Achen"]
FAMILY = ["Nakato", "Okello", "Gideon", "Mukasa", "Mukassa", "Smith", "Achieng"]
CITIES = ["Kampala", "Gulu", "Mbale"]


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 3 or rng.random() < 0.5:
        return word
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _patients(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """People, some recorded several times with typos, swapped names or missing fields."""
    rng = random.Random(seed)
    people: list[dict[str, Any]] = []
    out = []
    for n in range(count):
        if people and rng.random() < 0.4:
            base = rng.choice(people)
            given, family = _typo(rng, base["given"]), _typo(rng, base["family"])
            if rng.random() < 0.1:
                given, family = family, given
            person = {**base, "given": given, "family": family}
            if rng.random() < 0.3:
                person["phone"] = None
        else:
            person = {
                "given": rng.choice(GIVEN),
                "family": rng.choice(FAMILY),
                "birth": f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(9)}",
                "phone": f"0772 {rng.randrange(100000, 100400)}",
                "nid": f"CF{rng.randrange(1000, 1300)}" if rng.random() < 0.5 else None,
                "city": rng.choice(CITIES),
                "gender": rng.choice(["male", "female"]),
            }
            people.append(person)
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": f"p{n}",
            "name": [{"use": "official", "given": [person["given"]], "family": person["family"]}],
            "gender": person["gender"],
            "birthDate": person["birth"],
            "address": [{"city": person["city"]}],
            "identifier": [{"system": "http://clientregistry.org/openmrs", "value": str(n)}],
        }
        if person["phone"]:
            resource["telecom"] = [{"system": "phone", "value": person["phone"]}]
        if person["nid"]:
            resource["identifier"].append(
                {"system": "http://example.org/fhir/sid/national-id", "value": person["nid"]}
            )
        out.append(resource)
    return out


@pytest.fixture(scope="module")
def ndjson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Patients, with a bad line and a duplicate id among them."""
    path = tmp_path_factory.mktemp("pipeline") / "patients.ndjson"
    lines = [orjson.dumps(p) for p in _patients(700)]
    lines.insert(100, b"{not json")
    lines.insert(300, orjson.dumps(_patients(1)[0]))  # id p0 again
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _matcher(candidate_limit: int = 200) -> Matcher:
    return Matcher(
        default_rules(),
        record_id_systems=DEFAULT_RECORD_ID_SYSTEMS,
        candidate_limit=candidate_limit,
    )


def _result(dedup: Deduplicator, skipped: list[int | None]) -> tuple[Any, ...]:
    review = [(r.record_id, r.other_id, r.score, r.kind) for r in dedup.review]
    stats = dedup.stats
    counts = (stats.candidate_pairs, stats.capped_queries, stats.auto_links, stats.clusters)
    return dedup.golden_ids(), review, counts, skipped


def _in_process(path: Path, candidate_limit: int = 200) -> tuple[Any, ...]:
    dedup = Deduplicator(_matcher(candidate_limit))
    skipped = []
    for record in read_patients(path):
        if isinstance(record, InvalidRecord):
            skipped.append(record.line)
            continue
        try:
            dedup.add(record.record_id, record.resource, record.line)
        except InvalidRecord as error:
            skipped.append(error.line)
    return _result(dedup, skipped)


def _pipelined(path: Path, candidate_limit: int = 200, **options: Any) -> tuple[Any, ...]:
    dedup = Deduplicator(_matcher(candidate_limit))
    skipped = []
    records = prepare_in_background(
        path, CsvMapping(), None, sorted(DEFAULT_RECORD_ID_SYSTEMS), candidate_limit, **options
    )
    for item in records:
        if isinstance(item, InvalidRecord):
            skipped.append(item.line)
            continue
        assert isinstance(item, Prepared)
        try:
            dedup.add_prepared(item.record_id, item.prepared)
        except InvalidRecord:
            skipped.append(item.line)
    return _result(dedup, skipped)


def test_the_data_has_matches_of_every_kind(ndjson: Path) -> None:
    golden, review, counts, skipped = _in_process(ndjson)
    assert len(golden) == 700
    assert skipped == [101, 301]
    assert {kind for *_, kind in review} == {"potential", "conflict"}
    assert counts[2] > 100  # auto links


@pytest.mark.parametrize("backlog", [-1, 10**9, None])
def test_pipeline_gives_the_in_process_result(ndjson: Path, backlog: int | None) -> None:
    """-1: the worker scores every record; 10**9: the main process does; None: as it goes."""
    options = {} if backlog is None else {"backlog": backlog}
    assert _pipelined(ndjson, **options) == _in_process(ndjson)


def test_pipeline_honours_the_candidate_limit(ndjson: Path) -> None:
    expected = _in_process(ndjson, candidate_limit=2)
    assert expected[2][1] > 0  # capped queries
    assert _pipelined(ndjson, candidate_limit=2, backlog=-1) == expected
    assert _pipelined(ndjson, candidate_limit=2, backlog=10**9) == expected


def test_reader_scores_as_the_deduplicator_does(ndjson: Path) -> None:
    """The worker's side in this process: found and scored candidates, every other record."""
    reader = Reader(_matcher())
    dedup = Deduplicator(_matcher())
    skipped = []
    for n, record in enumerate(read_patients(ndjson)):
        if isinstance(record, InvalidRecord):
            skipped.append(record.line)
            continue
        assert isinstance(record, SourceRecord)
        done = reader.prepare(record.record_id, record.resource, score=n % 2 == 0)
        if done is None:
            skipped.append(record.line)
            continue
        features, found, scored = done
        assert (scored is None) == (n % 2 == 1)
        pairs = None if scored is None else tuple((j, PairScore(s, d, r)) for j, s, d, r in scored)
        dedup.add_prepared(record.record_id, PreparedRecord(features, (), found, pairs))
    assert _result(dedup, skipped) == _in_process(ndjson)


def test_a_failing_reader_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ndjson"
    with pytest.raises(RuntimeError, match=r"reading .*missing\.ndjson failed"):
        list(prepare_in_background(missing, CsvMapping(), None, []))


def test_stopping_early_stops_the_worker(ndjson: Path) -> None:
    records = prepare_in_background(ndjson, CsvMapping(), None, [])
    assert isinstance(next(records), Prepared)
    records.close()  # what a caller stopping at a bad record does


def test_term_counts_cover_every_record_whoever_scored(ndjson: Path) -> None:
    """The deduplicator counts values only when it scores; asking for the counts catches up."""
    from clientregistry.matching.term_frequency import TermCounts

    dedup = Deduplicator(_matcher())
    records = prepare_in_background(
        ndjson, CsvMapping(), None, sorted(DEFAULT_RECORD_ID_SYSTEMS), backlog=-1
    )
    for item in records:
        if isinstance(item, Prepared):
            with contextlib.suppress(InvalidRecord):  # the duplicate id
                dedup.add_prepared(item.record_id, item.prepared)
    expected = TermCounts(dedup.matcher.extractor)
    for features in dedup.features:
        expected.add(features)
    counts = dedup.term_counts
    assert counts.slots and counts.slots == expected.slots
    for slot in counts.slots:
        for value in {features[slot] for features in dedup.features}:
            assert counts.tf(slot, value) == expected.tf(slot, value)
