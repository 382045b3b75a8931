"""The decision rules in force, readably, and a pair tester.

:func:`rules_view` describes every rule set: matching type, thresholds, the highest score a
pair can reach, filters, each field with its FHIRPath, algorithm(s), thresholds, levels with
m, u and the weight they add, null handling and groups, and the blocking keys the rules
imply (as ``clientregistry rules check`` prints them).

:func:`compare_pair` scores two Patients — each a stored source record (by id) or one pasted —
with the registry's matcher and term frequencies, and explains the verdict field by field
for every rule set (what ``clientregistry compare`` prints). Nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from clientregistry.errors import InvalidRecord
from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.patient import check_patient
from clientregistry.matching.rules import Field as RuleField
from clientregistry.matching.rules import RuleSet, max_contribution
from clientregistry.registry.actor import Actor, Reading, Refused, audit_read, not_found
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.review import RuleSetExplanation, person_name
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction
from clientregistry.store.models import SourceRecord


class LevelView(BaseModel):
    algorithm: str
    threshold: float | None
    m: float
    u: float
    weight: float = Field(description="log10(m/u): what agreeing at this level adds")
    term_frequency: bool
    term_frequency_minimum_u: float | None = Field(
        default=None, description="With term_frequency: a rarer value counts as this common"
    )
    swapped_with: str | None


class FieldView(BaseModel):
    name: str
    fhirpath: str
    value_type: str
    algorithm: str
    threshold: float | None
    weight: float | None = Field(description="Deterministic rule sets: what agreeing adds")
    levels: list[LevelView]
    else_m: float | None
    else_u: float | None
    else_weight: float | None = Field(description="What disagreeing adds (probabilistic)")
    null_handling: str | None
    null_handling_both: str | None
    group: str | None
    max_contribution: float


class FilterView(BaseModel):
    name: str
    fhirpath: str


class RuleSetView(BaseModel):
    index: int
    name: str
    matching_type: str
    potential_threshold: float
    auto_threshold: float
    max_score: float
    fields: list[FieldView]
    filters: list[FilterView]
    blocking: list[list[str]]


class BlockingGroup(BaseModel):
    rule_set: int = Field(description="The rule set's index")
    fields: list[str] = Field(description="Records agreeing on these fields are compared")


class RulesView(BaseModel):
    source: str
    rule_sets: list[RuleSetView]
    blocking_keys: list[str] = Field(description="How candidates are found (rules check)")
    blocking_groups: list[BlockingGroup]
    warnings: list[str]
    document: dict[str, Any] = Field(description="The rules as a decisionRules.json file")


class PairSide(BaseModel):
    record_id: str | None
    name: str | None
    birth_date: str | None
    gender: str | None
    resource: dict[str, Any]


class PairTest(BaseModel):
    left: PairSide
    right: PairSide
    score: float
    decision: Literal["auto", "potential", "none"]
    rule_set: str | None
    explanation: list[RuleSetExplanation]


def _field_view(rule_set: RuleSet, field: RuleField) -> FieldView:
    probabilistic = rule_set.probabilistic
    shows_threshold = field.comparator is not None and field.comparator.kind != "phonetic"
    return FieldView(
        name=field.name,
        fhirpath=field.fhirpath,
        value_type=str(field.value_type),
        algorithm=field.algorithm,
        threshold=field.threshold if shows_threshold else None,
        weight=None if probabilistic else field.weight,
        levels=[
            LevelView(
                algorithm=level.algorithm,
                threshold=None
                if level.comparator is not None and level.comparator.name == "exact"
                else level.threshold,
                m=level.m,
                u=level.u,
                weight=round(level.weight, 4),
                term_frequency=level.term_frequency,
                term_frequency_minimum_u=level.tf_minimum_u,
                swapped_with=level.swapped_with,
            )
            for level in (field.levels if probabilistic else ())
        ],
        else_m=field.else_m if probabilistic else None,
        else_u=field.else_u if probabilistic else None,
        else_weight=round(field.else_weight, 4) if probabilistic else None,
        null_handling=field.null_one,
        null_handling_both=field.null_both,
        group=field.group,
        max_contribution=round(max_contribution(rule_set, field), 4),
    )


def rules_view(context: RegistryContext, actor: Actor) -> RulesView:
    """The decision rules the registry matches with."""
    rules = context.matcher.rules
    lines = list(context.matcher.blocker.describe())
    view = RulesView(
        source=rules.source,
        rule_sets=[
            RuleSetView(
                index=rs.index,
                name=rs.name,
                matching_type=rs.matching_type,
                potential_threshold=rs.potential_threshold,
                auto_threshold=rs.auto_threshold,
                max_score=round(rs.max_score(), 4),
                fields=[_field_view(rs, f) for f in (*rs.phonetic_blocks, *rs.fields)],
                filters=[FilterView(name=f.name, fhirpath=f.fhirpath) for f in rs.filters],
                blocking=[list(group) for group in rs.blocking],
            )
            for rs in rules.rule_sets
        ],
        blocking_keys=lines,
        blocking_groups=[_group(line) for line in lines],
        warnings=list(rules.warnings),
        document=rules.to_json(),
    )
    audit_read(context, actor, Reading("rules-read"))
    return view


def _group(line: str) -> BlockingGroup:
    """One line of the blocker's description (``rule set 1: given + family``)."""
    head, _, names = line.partition(": ")
    number = "".join(c for c in head if c.isdigit())
    return BlockingGroup(
        rule_set=int(number) - 1 if number else 0,
        fields=[n.strip() for n in names.split(" + ") if n.strip()],
    )


# ----------------------------------------------------------------------------- pair tester

PairInput = str | Mapping[str, Any]
"""A stored record's id, or a Patient."""


def _side(context: RegistryContext, value: PairInput, which: str) -> PairSide:
    if isinstance(value, str):
        with transaction(context.sessions, write=False) as session:
            record = session.get(SourceRecord, value.strip())
            if record is None:
                raise not_found(f"{which}: no source record Patient/{value}", record=value)
            resource = dict(record.resource)
            record_id: str | None = record.id
    else:
        try:
            check_patient(value)
        except (FhirError, InvalidRecord) as error:
            message = getattr(error, "diagnostics", None) or str(error)
            raise Refused(400, f"{which}: {message}", code="bad-patient") from None
        resource = dict(value)
        record_id = None
    return PairSide(
        record_id=record_id,
        name=person_name(resource),
        birth_date=resource.get("birthDate")
        if isinstance(resource.get("birthDate"), str)
        else None,
        gender=resource.get("gender") if isinstance(resource.get("gender"), str) else None,
        resource=resource,
    )


def compare_pair(
    context: RegistryContext, actor: Actor, left: PairInput, right: PairInput
) -> PairTest:
    """Score two Patients and explain it; nothing is stored."""
    one, other = _side(context, left, "left"), _side(context, right, "right")
    matcher = context.matcher
    features = [matcher.extractor.extract(side.resource) for side in (one, other)]
    results = matcher.scorer.explain(features[0], features[1], context.term_counts.tf)
    best = matcher.scorer.best(results)
    compared = PairTest(
        left=one,
        right=other,
        score=0.0 if best is None else round(best.score, 4),
        decision="none" if best is None else best.decision,
        rule_set=None if best is None else best.name,
        explanation=[RuleSetExplanation.model_validate(r.to_json()) for r in results],
    )
    entities = [f"Patient/{s.record_id}" for s in (one, other) if s.record_id]
    reading = Reading(
        "pair-test",
        entity=entities[0] if entities else None,
        detail={"records": entities, "score": compared.score, "decision": compared.decision},
        action=AuditAction.EXECUTE,
    )
    audit_read(context, actor, reading)
    return compared
