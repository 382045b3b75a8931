"""Stored features made again when they follow another layout
(:mod:`clientregistry.registry.stored_features`): a database of an earlier release (no layout
recorded, features of other rules), rules of the configuration that read a new field, and an
empty registry, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.rules_in_force import STATE_ID, layout_to_json
from clientregistry.registry.setup import init_data_dir, prepare_to_serve
from clientregistry.registry.stored_features import bring_up_to_date
from clientregistry.registry.submit import Submitter
from clientregistry.settings import CONFIG_FILE, load_settings
from clientregistry.store.blocking_index import key_hashes
from clientregistry.store.db import transaction
from clientregistry.store.enums import MatchStatus
from clientregistry.store.models import BlockingKey, RulesState, SourceRecord, TermCount

FreshDatabase = Callable[[str], AbstractContextManager[str]]
DEFAULT_RULES = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "clientregistry"
    / "matching"
    / "default_rules.json"
)


def _patient(n: int, given: str, family: str = "Okello") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://clientregistry.org/openmrs", "value": f"r{n}"}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": "1980-03-04",
        "gender": "female",
        "telecom": [{"system": "phone", "value": "0772123456"}],
        "address": [{"city": "Kampala", "postalCode": "256"}],
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def data_dir(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database: FreshDatabase
) -> Iterator[Path]:
    """A registry holding Grace (twice) and Peter, made under the built-in rules."""
    with fresh_database(request.param) as url:
        data_dir = tmp_path / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        try:
            client = context.settings.systems["openmrs"]
            with transaction(context.sessions) as session:
                for n, (given, family) in enumerate(
                    [("Grace", "Okello"), ("Grace", "Okello"), ("Peter", "Mugisha")]
                ):
                    Submitter(context).submit(session, _patient(n, given, family), client)
        finally:
            context.close()
        yield data_dir


def _open(data_dir: Path) -> RegistryContext:
    return RegistryContext.open(load_settings(data_dir, environ={}))


def _assert_derived_for(context: RegistryContext) -> None:
    """Every record's features and blocking keys are those of the matcher in force, the
    layout recorded is the matcher's, and the term counts are counted."""
    extractor, blocker = context.matcher.extractor, context.matcher.blocker
    with transaction(context.sessions, write=False) as session:
        rows = list(
            session.execute(select(SourceRecord.id, SourceRecord.resource, SourceRecord.features))
        )
        assert rows
        for record_id, resource, features in rows:
            expected = extractor.extract(resource)
            assert features == expected
            keys = session.scalars(
                select(BlockingKey.key_hash).where(BlockingKey.record_id == record_id)
            )
            assert sorted(keys) == sorted(key_hashes(blocker.keys(expected)))
        state = session.get(RulesState, STATE_ID)
        assert state is not None and state.layout == layout_to_json(extractor.layout)
        assert session.scalar(select(func.count()).select_from(TermCount)) > 0


def _spoil_as_an_earlier_release(data_dir: Path) -> None:
    """Features of another layout, no keys, no term counts, no layout recorded."""
    context = _open(data_dir)
    try:
        with transaction(context.sessions) as session:
            session.execute(update(RulesState).values(layout=None))
            session.execute(update(SourceRecord).values(features=("okello", "1980", "f")))
            session.execute(delete(BlockingKey))
            session.execute(delete(TermCount))
    finally:
        context.close()


def test_features_of_an_earlier_release_are_derived_again(data_dir: Path) -> None:
    _spoil_as_an_earlier_release(data_dir)
    context = _open(data_dir)
    try:
        _assert_derived_for(context)
        # Grace again: found through the keys made anew and scored on the features made anew
        with transaction(context.sessions) as session:
            result = Submitter(context).submit(
                session, _patient(9, "Grace"), context.settings.systems["openmrs"]
            )
            golden = session.scalar(
                select(SourceRecord.golden_id).where(SourceRecord.internal_value == "r0")
            )
        assert result.status is MatchStatus.AUTO and result.golden_id == golden
        assert bring_up_to_date(context.sessions, context.matcher) is None  # done once
    finally:
        context.close()


def test_rules_that_read_a_new_field_give_every_record_that_field(data_dir: Path) -> None:
    before = _open(data_dir)
    try:
        old_layout = layout_to_json(before.matcher.extractor.layout)
    finally:
        before.close()
    rules = json.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["rules"][0]["fields"]["country"] = {
        "fhirpath": "address.country",
        "levels": [{"algorithm": "exact", "mValue": 0.9, "uValue": 0.1}],
        "else": {"mValue": 0.1, "uValue": 0.9},
    }
    (data_dir / "rules.json").write_text(json.dumps(rules), encoding="utf-8")
    config = data_dir / CONFIG_FILE
    text = config.read_text(encoding="utf-8")
    assert 'rules = ""' in text
    config.write_text(text.replace('rules = ""', 'rules = "rules.json"'), encoding="utf-8")

    context = _open(data_dir)
    try:
        layout = layout_to_json(context.matcher.extractor.layout)
        assert layout[: len(old_layout)] == old_layout and len(layout) == len(old_layout) + 1
        _assert_derived_for(context)
    finally:
        context.close()


def test_an_empty_registry_only_records_its_layout(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    with fresh_database("sqlite") as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        context = _open(tmp_path / "data")
        try:
            with transaction(context.sessions, write=False) as session:
                state = session.get(RulesState, STATE_ID)
                assert state is not None
                assert state.layout == layout_to_json(context.matcher.extractor.layout)
            assert bring_up_to_date(context.sessions, context.matcher) is None
        finally:
            context.close()


def test_serve_derives_them_before_its_workers_start(data_dir: Path) -> None:
    """``serve``'s workers open the registry without migrating: the serving command's own
    preparation derives the features, and says so."""
    _spoil_as_an_earlier_release(data_dir)
    warnings = prepare_to_serve(load_settings(data_dir, environ={}))
    assert any("blocking keys of 3 records again" in warning for warning in warnings)
    context = RegistryContext.open(load_settings(data_dir, environ={}), run_migrations=False)
    try:
        _assert_derived_for(context)
    finally:
        context.close()


def _weighs_by_term_frequency(data_dir: Path, field: str) -> None:
    """The registry's rules become the built-in ones with ``field``'s first level weighed by
    term frequency (only ever down), the layout unchanged."""
    rules = json.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    level = rules["rules"][0]["fields"][field]["levels"][0]
    level.pop("termFrequency", None)
    level.pop("termFrequencyMinimumU", None)
    level.update(termFrequency=True, termFrequencyMinimumU=level["uValue"])
    (data_dir / "rules.json").write_text(json.dumps(rules), encoding="utf-8")
    config = data_dir / CONFIG_FILE
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('rules = ""', 'rules = "rules.json"'), encoding="utf-8")


def _counts_of(context: RegistryContext, field: str) -> dict[str, int]:
    fields = {f.name: f for f in context.matcher.rules.rule_sets[0].fields}
    slot = context.matcher.extractor.slot(fields[field])
    with transaction(context.sessions, write=False) as session:
        rows = session.execute(
            select(TermCount.value, TermCount.count).where(TermCount.slot == slot)
        )
        return {value: count for value, count in rows}


def _forget_counts(data_dir: Path, field: str) -> tuple[int, int]:
    """Delete ``field``'s term counts, as a release that did not weigh it left them; its slot
    and the rules' generation."""
    context = _open(data_dir)
    try:
        fields = {f.name: f for f in context.matcher.rules.rule_sets[0].fields}
        slot = context.matcher.extractor.slot(fields[field])
        with transaction(context.sessions) as session:
            session.execute(delete(TermCount).where(TermCount.slot == slot))
            state = session.get(RulesState, STATE_ID)
            assert state is not None
            return slot, state.generation
    finally:
        context.close()


def test_a_field_newly_weighed_by_term_frequency_is_counted_once(data_dir: Path) -> None:
    """An upgrade whose rules weigh a field by term frequency that the stored term counts do
    not hold (the layout unchanged): its values are counted from the stored records, and the
    serving matcher sees them; the next opening counts nothing."""
    slot, generation = _forget_counts(data_dir, "postalCode")
    _weighs_by_term_frequency(data_dir, "postalCode")
    context = _open(data_dir)
    try:
        # three records hold postal code 256; the marker row says the slot is counted
        assert _counts_of(context, "postalCode") == {"256": 3, "": 0}
        assert (slot, "256", 3) in set(context.term_counts.items())  # the matcher's counts
        with transaction(context.sessions, write=False) as session:
            state = session.get(RulesState, STATE_ID)
            assert state is not None and state.generation == generation + 1
        assert bring_up_to_date(context.sessions, context.matcher) is None
        with transaction(context.sessions, write=False) as session:
            state = session.get(RulesState, STATE_ID)
            assert state is not None and state.generation == generation + 1  # nothing again
    finally:
        context.close()


def test_a_field_no_record_holds_is_counted_once_too(data_dir: Path) -> None:
    """A slot whose records all lack a value gets its marker row, so opening the registry
    again does not read every record again."""
    _forget_counts(data_dir, "addressLine")
    _weighs_by_term_frequency(data_dir, "addressLine")  # the records have no address line
    context = _open(data_dir)
    try:
        assert _counts_of(context, "addressLine") == {"": 0}
        with transaction(context.sessions, write=False) as session:
            generation = session.get(RulesState, STATE_ID).generation  # type: ignore[union-attr]
        assert bring_up_to_date(context.sessions, context.matcher) is None
        with transaction(context.sessions, write=False) as session:
            state = session.get(RulesState, STATE_ID)
            assert state is not None and state.generation == generation
    finally:
        context.close()


def test_rules_with_new_key_groups_give_every_record_their_keys(data_dir: Path) -> None:
    """The same fields (the layout unchanged) but another key group: the stored records'
    blocking keys are made again, and the digest of the key plan is recorded."""
    rules = json.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    rules["rules"][0]["blocking"].append(["gender", "birthDate:value"])
    (data_dir / "rules.json").write_text(json.dumps(rules), encoding="utf-8")
    config = data_dir / CONFIG_FILE
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('rules = ""', 'rules = "rules.json"'), encoding="utf-8")
    context = _open(data_dir)
    try:
        _assert_derived_for(context)  # every record's keys are the new blocker's
        with transaction(context.sessions, write=False) as session:
            state = session.get(RulesState, STATE_ID)
            assert state is not None
            assert state.key_plan == context.matcher.blocker.signature()
            tagged = session.scalar(select(func.count()).select_from(BlockingKey))
        assert tagged and bring_up_to_date(context.sessions, context.matcher) is None
    finally:
        context.close()


def test_a_database_without_a_key_plan_makes_its_keys_again(data_dir: Path) -> None:
    """A database of an earlier release records no key plan: its keys are made once."""
    context = _open(data_dir)
    try:
        with transaction(context.sessions) as session:
            session.execute(update(RulesState).values(key_plan=None))
            session.execute(delete(BlockingKey))  # keys of another plan, as far as we know
        assert bring_up_to_date(context.sessions, context.matcher) == 3
        _assert_derived_for(context)
        assert bring_up_to_date(context.sessions, context.matcher) is None
    finally:
        context.close()
