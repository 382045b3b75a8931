"""Decision rules: OpenCR's ``decisionRules.json``, parsed and checked once.

The format is OpenCR's, so its users' files load unchanged:

* ``rules`` is a list of rule sets (alternatives; a pair's result is the best over them), or
  the older object form ``{"givenName": {"algorithm", "threshold", "path"}, ...}``, which is one
  deterministic rule set whose fields must all agree;
* a rule set has ``matchingType`` (``deterministic`` | ``probabilistic``), ``fields``,
  ``potentialMatchThreshold``, ``autoMatchThreshold``, optional ``filters`` and rule-level
  ``null_handling`` / ``null_handling_both`` defaults;
* a field has ``algorithm``, ``threshold``, ``fhirpath`` (or ``path``), ``weight``,
  ``mValue``/``uValue``, ``null_handling``, ``null_handling_both`` (camel-case spellings too);
  ``espath`` and the old ``type``/``systems`` keys are accepted and ignored.

Extensions (documented in ``docs/decision-rules.md``): ``levels`` (several comparison levels,
each with its own m and u, Splink style), ``else`` (m and u of "no level agreed"),
``termFrequency`` (weigh agreement on rare values more), ``valueType`` (how values are
normalised), the ``shared-identifier`` algorithm and a rule set ``name``.

:func:`load_rules` reports every problem at once, each with the file, rule and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from clientregistry.errors import Problem, RuleSetError
from clientregistry.matching.comparators import (
    ALGORITHMS,
    BOOLEAN_KINDS,
    Comparator,
    get_comparator,
)
from clientregistry.matching.fhirpath import FhirPathError, check_syntax
from clientregistry.matching.normalize import VALUE_TYPES, ValueType

MatchingType = Literal["deterministic", "probabilistic"]
Words = Literal["first", "rest", "distinct"]
WORDS: tuple[Words, ...] = ("first", "rest", "distinct")

DEFAULT_UNIQUE_SYSTEMS: tuple[str, ...] = (
    "*ssn*",
    "*national*id*",
    "*/nin",
    "*passport*",
    "*/nhs-number",
    "*/uk-nhs-number",
    "*/ca-on-health-number",
)
"""Identifier systems one person holds one value of, as case-insensitive glob patterns: what
``uniqueSystems`` means when a ``shared-identifier`` field sets it to ``"default"``."""
NullHandling = Literal["conservative", "moderate", "greedy"]
NULL_HANDLINGS: tuple[NullHandling, ...] = ("conservative", "moderate", "greedy")

SHARED_IDENTIFIER = "shared-identifier"
"""Extension algorithm: agree when the records share an identifier system and its value."""

BASE_SCORE = 100.0
"""OpenCR's probabilistic scores start here; each field adds its log10 weight."""

KEY_TRANSFORMS = ("initial", "value")
"""How a field's value may enter a blocking key of an explicit ``blocking`` group, written
``"field:transform"``: ``initial``, the first letter of its first word (a key that survives
a typo anywhere after it); ``value``, the whole value (a full birth date rather than the
partial dates a fuzzy date field gives). A plain field name takes the field's own keys."""

TF_MAX_SHIFT = 1.5
"""Term frequencies move a level's weight by at most this much (a factor of ~32) either way,
so that scores stay bounded however rare a value is and candidates can be pruned early."""

_FIELD_KEYS = {
    "algorithm",
    "threshold",
    "fhirpath",
    "path",
    "weight",
    "mValue",
    "uValue",
    "null_handling",
    "nullHandling",
    "null_handling_both",
    "nullHandlingBothFields",
    "espath",
    "type",
    "systems",
    "levels",
    "else",
    "termFrequency",
    "valueType",
    "group",
    "words",
    "uniqueSystems",
}
_RULE_KEYS = {
    "matchingType",
    "fields",
    "potentialMatchThreshold",
    "autoMatchThreshold",
    "filters",
    "null_handling",
    "nullHandling",
    "null_handling_both",
    "nullHandlingBothFields",
    "name",
    "blocking",
    "groupShare",
    "__comments",
}


@dataclass(frozen=True, slots=True)
class Level:
    """One comparison level of a probabilistic field: agreement by one algorithm."""

    algorithm: str
    comparator: Comparator | None  # None for shared-identifier
    threshold: float
    m: float
    u: float
    term_frequency: bool = False
    swapped_with: str | None = None
    """Extension: agree when this field of one record matches field ``swapped_with`` of the
    other and the other way round (given and family names written in each other's place)."""
    one_way: bool = False
    """With ``swapped_with`` (written ``crossWith``): agree when this field of *either* record
    matches a word of the other record's field ``swapped_with`` (a middle name used as the
    first name: "Mary Ann" / "Ann")."""
    tf_minimum_u: float | None = None
    """With ``term_frequency`` (written ``termFrequencyMinimumU``, Splink's
    ``tf_minimum_u_value``): a value rarer than this counts as this common, so agreement on a
    rare value weighs at most log10(m / tf_minimum_u). Equal to ``u``, term frequencies only
    ever lower the level's weight: a value many records share (a placeholder postal code,
    a big block of flats) says less, a rare one no more than the level says."""

    @property
    def weight(self) -> float:
        """log10(m/u): what agreeing at this level adds to the score."""
        return math.log10(self.m / self.u)


@dataclass(frozen=True, slots=True)
class Field:
    """One compared field of a rule set.

    Deterministic fields agree when ``comparator.agrees(a, b, threshold)``; they add
    ``weight``. Probabilistic fields take the first agreeing level of ``levels`` (an OpenCR
    field has exactly one) and add its weight, or ``else_weight`` when none agrees.
    """

    name: str
    fhirpath: str
    value_type: ValueType
    algorithm: str
    comparator: Comparator | None
    threshold: float
    weight: float
    levels: tuple[Level, ...]
    else_m: float
    else_u: float
    null_one: NullHandling | None
    null_both: NullHandling | None
    group: str | None = None
    """Extension: fields of one group are correlated (address line, city, postcode, phone of a
    household); their agreement counts once, as the strongest of them, while disagreements
    still add up."""
    words: Words | None = None
    """Extension: which words of the (normalised, joined) value are compared: the ``first``
    (the first given name), the ``rest`` (the middle names) or the ``distinct`` ones (family
    names of all of a record's names, each once)."""
    unique_systems: tuple[str, ...] | None = None
    """Extension, ``shared-identifier`` only: identifier systems (glob patterns) that hold one
    value per person. When set, only a different value of such a system counts against (a
    cannot-link in clustering); other systems (record numbers of source systems) count only
    when shared. ``None``: every shared system counts both ways (OpenCR)."""

    @property
    def else_weight(self) -> float:
        """log10((1-m)/(1-u)) for an OpenCR field: what disagreeing adds."""
        return math.log10(self.else_m / self.else_u)

    @property
    def is_identifier_set(self) -> bool:
        return self.algorithm == SHARED_IDENTIFIER


@dataclass(frozen=True, slots=True)
class Filter:
    """A hard block: candidates must agree exactly on this value."""

    name: str
    fhirpath: str
    value_type: ValueType


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One alternative way of deciding a match."""

    index: int
    name: str
    matching_type: MatchingType
    fields: tuple[Field, ...]
    filters: tuple[Filter, ...]
    potential_threshold: float
    auto_threshold: float
    phonetic_blocks: tuple[Field, ...] = ()
    blocking: tuple[tuple[str, ...], ...] = ()
    """Explicit blocking key groups (field names); empty means derive them from the weights."""
    group_share: float = 0.0
    """Extension (``groupShare``): what share of a group's agreements other than the strongest
    still counts (0: the strongest alone; 1: all, as if ungrouped). Agreement of correlated
    fields is weaker evidence than the sum of their weights, but not worthless."""

    @property
    def probabilistic(self) -> bool:
        return self.matching_type == "probabilistic"

    def max_score(self) -> float:
        """The highest score any pair can reach under this rule set."""
        best: dict[str, float] = {}
        rest: dict[str, float] = {}
        total = BASE_SCORE if self.probabilistic else 0.0
        for f in self.fields:
            top = max_contribution(self, f)
            if f.group is None:
                total += top
            else:
                best[f.group] = max(best.get(f.group, 0.0), top)
                rest[f.group] = rest.get(f.group, 0.0) + top
        share = self.group_share
        return total + sum(b + share * (rest[g] - b) for g, b in best.items())


def max_contribution(rs: RuleSet, f: Field) -> float:
    """The most one field can add to a pair's score (term frequencies included)."""
    if not rs.probabilistic:
        return max(f.weight, 0.0)
    tops = [lv.weight + (TF_MAX_SHIFT if lv.term_frequency else 0.0) for lv in f.levels]
    return max(0.0, f.else_weight, *tops)


@dataclass(frozen=True, slots=True)
class DecisionRules:
    """Every rule set of one decision-rules file, checked."""

    rule_sets: tuple[RuleSet, ...]
    source: str = "<rules>"
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The rules in OpenCR's JSON format (with extensions where used)."""
        return {"rules": [_rule_set_json(rs) for rs in self.rule_sets]}


# ----------------------------------------------------------------------------- loading


def load_rules(path: str | Path) -> DecisionRules:
    """Load and check a decision-rules file; raise :class:`RuleSetError` listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RuleSetError(source, [Problem("", f"cannot read file: {error.strerror}")]) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        problem = Problem(f"line {error.lineno}, column {error.colno}", f"not JSON: {error.msg}")
        raise RuleSetError(source, [problem]) from None
    return parse_rules(document, source=source)


def parse_rules(document: Any, *, source: str = "<rules>") -> DecisionRules:
    """Check a parsed decision-rules document; raise :class:`RuleSetError` on any problem."""
    parser = _Parser()
    rule_sets = parser.document(document)
    if parser.problems:
        raise RuleSetError(source, parser.problems)
    return DecisionRules(tuple(rule_sets), source, tuple(parser.warnings))


def infer_value_type(fhirpath: str) -> ValueType:
    """Guess how to normalise a field's values from its FHIRPath."""
    path = fhirpath.replace(" ", "")
    last = path.rsplit(".", 1)[-1]
    if "Date" in last or last in {"birthDate", "deceasedDateTime"} or path.endswith("birthDate"):
        return "date"
    if "telecom" in path and "system='email'" not in path:
        return "phone"
    if path.startswith("identifier") or ".identifier" in path:
        return "identifier"
    if last in {"gender", "active", "maritalStatus"}:
        return "code"
    return "text"


class _Parser:
    """Walks a rules document, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def problem(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))

    def document(self, document: Any) -> list[RuleSet]:
        if not isinstance(document, dict):
            self.problem("", "the file must hold a JSON object with a 'rules' member")
            return []
        rules = document.get("rules")
        if rules is None:
            self.problem("", "missing 'rules' (a list of rule sets)")
            return []
        if isinstance(rules, dict):
            return self.legacy(rules)
        if not isinstance(rules, list) or not rules:
            self.problem("rules", "must be a non-empty list of rule sets")
            return []
        out = []
        for index, raw in enumerate(rules):
            rule_set = self.rule_set(index, raw)
            if rule_set is not None:
                out.append(rule_set)
        return out

    def legacy(self, rules: dict[str, Any]) -> list[RuleSet]:
        """The older object form: one deterministic rule set, every field must agree."""
        where = "rules"
        fields = []
        for name, raw in rules.items():
            built = self.field(f"{where}.{name}", name, raw, "deterministic", None, None)
            if built is not None:
                fields.append(built)
        if not rules:
            self.problem(where, "no fields")
        if self.problems:
            return []
        total = float(len(fields))
        return [RuleSet(0, "rules", "deterministic", tuple(fields), (), total, total)]

    def rule_set(self, index: int, raw: Any) -> RuleSet | None:
        where = f"rules[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, "a rule set must be a JSON object")
            return None
        for key in raw.keys() - _RULE_KEYS:
            self.warnings.append(f"{where}: unknown key {key!r} ignored")
        matching_type = raw.get("matchingType")
        if matching_type not in ("deterministic", "probabilistic"):
            self.problem(
                f"{where}.matchingType",
                f"must be 'deterministic' or 'probabilistic', not {matching_type!r}",
            )
            return None
        mtype = cast(MatchingType, matching_type)
        null_one = self.null_handling(where, raw, ("null_handling", "nullHandling"))
        null_both = self.null_handling(where, raw, ("null_handling_both", "nullHandlingBothFields"))
        raw_fields = raw.get("fields")
        fields: list[Field] = []
        if not isinstance(raw_fields, dict) or not raw_fields:
            self.problem(f"{where}.fields", "must be an object with at least one field")
        else:
            for name, raw_field in raw_fields.items():
                built = self.field(
                    f"{where}.fields.{name}", name, raw_field, mtype, null_one, null_both
                )
                if built is not None:
                    fields.append(built)
        filters = self.filters(where, raw.get("filters"))
        potential = self.number(where, raw, "potentialMatchThreshold", required=True)
        auto = self.number(where, raw, "autoMatchThreshold", required=True)
        if potential is not None and auto is not None and auto < potential:
            self.problem(
                f"{where}.autoMatchThreshold",
                f"auto-match threshold {auto:g} is below the potential-match threshold "
                f"{potential:g}",
            )
        if potential is None or auto is None or len(fields) != len(raw_fields or {}):
            return None
        phonetic = tuple(f for f in fields if f.algorithm == "phonetic")
        scored = tuple(f for f in fields if f.algorithm != "phonetic")
        name = raw.get("name") if isinstance(raw.get("name"), str) else f"rule {index + 1}"
        names = {f.name for f in scored}
        for f in scored:
            for i, level in enumerate(f.levels):
                if level.swapped_with is not None and (
                    level.swapped_with not in names or level.swapped_with == f.name
                ):
                    key = "crossWith" if level.one_way else "swappedWith"
                    self.problem(
                        f"{where}.fields.{f.name}.levels[{i}].{key}",
                        f"{level.swapped_with!r} is not another field of this rule set",
                    )
        blocking = self.blocking(where, raw.get("blocking"), names)
        share = self.number(where, raw, "groupShare", low=0.0, high=1.0)
        rule_set = RuleSet(
            index,
            str(name),
            mtype,
            scored,
            filters,
            potential,
            auto,
            phonetic,
            blocking,
            0.0 if share is None else share,
        )
        if rule_set.max_score() < potential:
            self.warnings.append(
                f"{where}: no pair can reach the potential-match threshold {potential:g} "
                f"(highest possible score {rule_set.max_score():g})"
            )
        return rule_set

    def blocking(self, where: str, raw: Any, names: set[str]) -> tuple[tuple[str, ...], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(
            isinstance(group, list) and group and all(isinstance(n, str) for n in group)
            for group in raw
        ):
            self.problem(f"{where}.blocking", "must be a list of lists of field names")
            return ()
        for i, group in enumerate(raw):
            for item in group:
                name, colon, transform = item.partition(":")
                if name not in names:
                    self.problem(f"{where}.blocking[{i}]", f"{name!r} is not a scored field")
                elif colon and transform not in KEY_TRANSFORMS:
                    self.problem(
                        f"{where}.blocking[{i}]",
                        f"{item!r}: a key part is a field name, or a field name with "
                        f"':' and one of {', '.join(KEY_TRANSFORMS)}",
                    )
        return tuple(tuple(group) for group in raw)

    def null_handling(
        self, where: str, raw: dict[str, Any], keys: tuple[str, str]
    ) -> NullHandling | None:
        for key in keys:
            if key in raw:
                value = raw[key]
                if value not in NULL_HANDLINGS:
                    self.problem(
                        f"{where}.{key}",
                        f"must be one of {', '.join(NULL_HANDLINGS)}, not {value!r}",
                    )
                    return None
                return cast(NullHandling, value)
        return None

    def number(
        self,
        where: str,
        raw: dict[str, Any],
        key: str,
        *,
        required: bool = False,
        low: float | None = None,
        high: float | None = None,
        open_interval: bool = False,
    ) -> float | None:
        if key not in raw:
            if required:
                self.problem(f"{where}.{key}", "is required")
            return None
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.problem(f"{where}.{key}", f"must be a number, not {value!r}")
            return None
        number = float(value)
        if low is not None and high is not None:
            inside = low < number < high if open_interval else low <= number <= high
            if not inside:
                bounds = f"({low:g}, {high:g})" if open_interval else f"[{low:g}, {high:g}]"
                self.problem(f"{where}.{key}", f"{number:g} is outside {bounds}")
                return None
        elif low is not None and number < low:
            self.problem(f"{where}.{key}", f"{number:g} must be at least {low:g}")
            return None
        return number

    def path(self, where: str, raw: dict[str, Any]) -> str | None:
        expression = raw.get("fhirpath", raw.get("path"))
        if not isinstance(expression, str) or not expression.strip():
            self.problem(f"{where}.fhirpath", "is required (a FHIRPath expression)")
            return None
        try:
            check_syntax(expression)
        except FhirPathError as error:
            self.problem(f"{where}.fhirpath", f"FHIRPath {expression!r} does not parse: {error}")
            return None
        return expression

    def value_type(self, where: str, raw: dict[str, Any], expression: str) -> ValueType:
        declared = raw.get("valueType")
        if declared is None:
            return infer_value_type(expression)
        if declared not in VALUE_TYPES:
            self.problem(
                f"{where}.valueType", f"must be one of {', '.join(VALUE_TYPES)}, not {declared!r}"
            )
            return "text"
        return cast(ValueType, declared)

    def filters(self, where: str, raw: Any) -> tuple[Filter, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.problem(f"{where}.filters", "must be an object of {name: {fhirpath}}")
            return ()
        out = []
        for name, spec in raw.items():
            fwhere = f"{where}.filters.{name}"
            if not isinstance(spec, dict):
                self.problem(fwhere, "must be an object with a 'fhirpath'")
                continue
            expression = self.path(fwhere, spec)
            if expression is not None:
                value_type = self.value_type(fwhere, spec, expression)
                out.append(Filter(name, expression, value_type))
        return tuple(out)

    def comparator(self, where: str, algorithm: Any) -> tuple[str, Comparator | None] | None:
        if algorithm == SHARED_IDENTIFIER:
            return algorithm, None
        if not isinstance(algorithm, str):
            self.problem(f"{where}.algorithm", f"must be an algorithm name, not {algorithm!r}")
            return None
        try:
            return algorithm, get_comparator(algorithm)
        except KeyError:
            names = ", ".join(sorted([*ALGORITHMS, SHARED_IDENTIFIER]))
            self.problem(
                f"{where}.algorithm", f"unknown algorithm {algorithm!r}; known algorithms: {names}"
            )
            return None

    def threshold(self, where: str, raw: dict[str, Any], comparator: Comparator | None) -> float:
        if comparator is None or comparator.name == "exact":
            value = self.number(where, raw, "threshold")
            return 1.0 if value is None else value
        if comparator.kind in BOOLEAN_KINDS:
            return 1.0
        if comparator.kind == "similarity" or comparator.normalized:
            value = self.number(where, raw, "threshold", required=True, low=0.0, high=1.0)
        else:
            value = self.number(where, raw, "threshold", required=True, low=0.0)
        return 0.0 if value is None else value

    def edits(self, where: str, raw: dict[str, Any]) -> float:
        """A shared-identifier level's ``threshold``: how many edits a value of a system both
        records carry may be from the other's (0, the default: the same value)."""
        value = self.number(where, raw, "threshold", low=0.0)
        if value is None:
            return 0.0
        if not value.is_integer():
            self.problem(f"{where}.threshold", f"must be a whole number of edits, not {value:g}")
            return 0.0
        return value

    def m_u(self, where: str, raw: dict[str, Any]) -> tuple[float, float] | None:
        m = self.number(where, raw, "mValue", required=True, low=0.0, high=1.0, open_interval=True)
        u = self.number(where, raw, "uValue", required=True, low=0.0, high=1.0, open_interval=True)
        if m is None or u is None:
            return None
        return m, u

    def field(
        self,
        where: str,
        name: str,
        raw: Any,
        mtype: MatchingType,
        null_one: NullHandling | None,
        null_both: NullHandling | None,
    ) -> Field | None:
        if not isinstance(raw, dict):
            self.problem(where, "a field must be a JSON object")
            return None
        before = len(self.problems)
        for key in raw.keys() - _FIELD_KEYS:
            self.warnings.append(f"{where}: unknown key {key!r} ignored")
        expression = self.path(where, raw)
        own_one = self.null_handling(where, raw, ("null_handling", "nullHandling"))
        own_both = self.null_handling(where, raw, ("null_handling_both", "nullHandlingBothFields"))
        one = own_one or null_one
        # "nullHandling by itself is used with either one value or both null" (OpenCR docs)
        both = own_both or (own_one if own_one else None) or null_both or null_one
        levels: tuple[Level, ...] = ()
        else_m = else_u = 0.5
        weight = self.number(where, raw, "weight", low=0.0)
        if "levels" in raw:
            if mtype != "probabilistic":
                self.problem(f"{where}.levels", "levels are for probabilistic rule sets only")
                return None
            levels, else_m, else_u = self.levels(where, raw)
            algorithm, comparator, threshold = (
                (
                    levels[0].algorithm,
                    levels[0].comparator,
                    levels[0].threshold,
                )
                if levels
                else ("exact", None, 1.0)
            )
        else:
            found = self.comparator(where, raw.get("algorithm"))
            if found is None:
                return None
            algorithm, comparator = found
            threshold = self.threshold(where, raw, comparator)
            if mtype == "probabilistic":
                if algorithm == "phonetic":
                    self.problem(
                        f"{where}.algorithm",
                        "'phonetic' is a hard block for deterministic rule sets only",
                    )
                    return None
                mu = self.m_u(where, raw)
                if mu is not None:
                    m, u = mu
                    tf = bool(raw.get("termFrequency", False))
                    if algorithm == SHARED_IDENTIFIER:  # one level: a shared identifier
                        threshold = 0.0
                    levels = (Level(algorithm, comparator, threshold, m, u, tf),)
                    else_m, else_u = 1.0 - m, 1.0 - u
        if expression is None or len(self.problems) > before:
            return None
        value_type = self.value_type(where, raw, expression)
        if algorithm == "dateDamerau" and "valueType" not in raw:
            value_type = "date"
        return Field(
            name=name,
            fhirpath=expression,
            value_type=value_type,
            algorithm=algorithm,
            comparator=comparator,
            threshold=threshold,
            weight=1.0 if weight is None else weight,
            levels=levels,
            else_m=else_m,
            else_u=else_u,
            null_one=one,
            null_both=both,
            group=self.group(where, raw),
            words=self.words(where, raw),
            unique_systems=self.unique_systems(where, raw, algorithm),
        )

    def words(self, where: str, raw: dict[str, Any]) -> Words | None:
        value = raw.get("words")
        if value is None:
            return None
        if value not in WORDS:
            self.problem(f"{where}.words", f"must be one of {', '.join(WORDS)}, not {value!r}")
            return None
        return cast(Words, value)

    def unique_systems(
        self, where: str, raw: dict[str, Any], algorithm: str
    ) -> tuple[str, ...] | None:
        value = raw.get("uniqueSystems")
        if value is None:
            return None
        if algorithm != SHARED_IDENTIFIER:
            self.problem(f"{where}.uniqueSystems", "is for shared-identifier fields only")
            return None
        if value == "default":
            return DEFAULT_UNIQUE_SYSTEMS
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(
                f"{where}.uniqueSystems",
                'must be "default" or a list of identifier systems (glob patterns allowed)',
            )
            return None
        return tuple(value)

    def group(self, where: str, raw: dict[str, Any]) -> str | None:
        value = raw.get("group")
        if value is not None and (not isinstance(value, str) or not value):
            self.problem(f"{where}.group", f"must be a group name, not {value!r}")
            return None
        return value

    def levels(self, where: str, raw: dict[str, Any]) -> tuple[tuple[Level, ...], float, float]:
        raw_levels = raw["levels"]
        if not isinstance(raw_levels, list) or not raw_levels:
            self.problem(f"{where}.levels", "must be a non-empty list of levels")
            return (), 0.5, 0.5
        out: list[Level] = []
        for i, raw_level in enumerate(raw_levels):
            lwhere = f"{where}.levels[{i}]"
            if not isinstance(raw_level, dict):
                self.problem(lwhere, "a level must be a JSON object")
                continue
            found = self.comparator(lwhere, raw_level.get("algorithm"))
            mu = self.m_u(lwhere, raw_level)
            if found is None or mu is None:
                continue
            if found[0] == SHARED_IDENTIFIER:
                threshold = self.edits(lwhere, raw_level)
            else:
                threshold = self.threshold(lwhere, raw_level, found[1])
            term_frequency = bool(raw_level.get("termFrequency", False))
            tf_minimum_u = self.number(
                lwhere, raw_level, "termFrequencyMinimumU", low=0.0, high=1.0, open_interval=True
            )
            if tf_minimum_u is not None and not term_frequency:
                self.warnings.append(
                    f"{lwhere}.termFrequencyMinimumU: ignored without termFrequency: true"
                )
                tf_minimum_u = None
            swapped = raw_level.get("swappedWith")
            crossed = raw_level.get("crossWith")
            if swapped is not None and crossed is not None:
                self.problem(lwhere, "give swappedWith or crossWith, not both")
                continue
            key = "swappedWith" if crossed is None else "crossWith"
            other = swapped if crossed is None else crossed
            if other is not None and not isinstance(other, str):
                self.problem(f"{lwhere}.{key}", "must be the name of another field")
                continue
            out.append(
                Level(
                    found[0],
                    found[1],
                    threshold,
                    mu[0],
                    mu[1],
                    term_frequency,
                    other,
                    one_way=crossed is not None,
                    tf_minimum_u=tf_minimum_u,
                )
            )
        if len({level.algorithm == SHARED_IDENTIFIER for level in out}) > 1:
            self.problem(
                f"{where}.levels",
                "shared-identifier levels cannot be mixed with other algorithms",
            )
        sum_m = sum(level.m for level in out)
        sum_u = sum(level.u for level in out)
        raw_else = raw.get("else")
        if isinstance(raw_else, dict):
            mu = self.m_u(f"{where}.else", raw_else)
            else_m, else_u = mu if mu is not None else (0.5, 0.5)
        else:
            else_m, else_u = 1.0 - sum_m, 1.0 - sum_u
            if out and (else_m <= 0.0 or else_u <= 0.0):
                self.problem(
                    f"{where}.levels",
                    "the levels' mValues (or uValues) add up to 1 or more; "
                    "give an explicit 'else' level",
                )
        return tuple(out), max(else_m, 1e-12), max(else_u, 1e-12)


# ----------------------------------------------------------------------------- writing


def _field_json(f: Field, probabilistic: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"fhirpath": f.fhirpath}
    plain_else = len(f.levels) == 1 and (
        math.isclose(f.else_m, 1.0 - f.levels[0].m) and math.isclose(f.else_u, 1.0 - f.levels[0].u)
    )
    if probabilistic and (
        not plain_else or any(lv.term_frequency or lv.swapped_with for lv in f.levels)
    ):
        out["levels"] = [_level_json(lv) for lv in f.levels]
        out["else"] = {"mValue": f.else_m, "uValue": f.else_u}
    else:
        out["algorithm"] = f.algorithm
        if f.comparator is not None and f.comparator.kind not in BOOLEAN_KINDS:
            out["threshold"] = f.threshold
        if probabilistic:
            out["mValue"] = f.levels[0].m
            out["uValue"] = f.levels[0].u
        elif f.weight != 1.0:
            out["weight"] = f.weight
    if f.value_type != infer_value_type(f.fhirpath):
        out["valueType"] = f.value_type
    if f.group is not None:
        out["group"] = f.group
    if f.words is not None:
        out["words"] = f.words
    if f.unique_systems is not None:
        out["uniqueSystems"] = list(f.unique_systems)
    if f.null_one is not None:
        out["null_handling"] = f.null_one
    if f.null_both is not None:
        out["null_handling_both"] = f.null_both
    return out


def _level_json(level: Level) -> dict[str, Any]:
    out: dict[str, Any] = {"algorithm": level.algorithm}
    if level.comparator is not None and level.comparator.name != "exact":
        out["threshold"] = level.threshold
    elif level.comparator is None and level.threshold > 0:  # shared-identifier within edits
        out["threshold"] = int(level.threshold)
    out["mValue"] = level.m
    out["uValue"] = level.u
    if level.term_frequency:
        out["termFrequency"] = True
    if level.tf_minimum_u is not None:
        out["termFrequencyMinimumU"] = level.tf_minimum_u
    if level.swapped_with is not None:
        out["crossWith" if level.one_way else "swappedWith"] = level.swapped_with
    return out


def _filter_json(flt: Filter) -> dict[str, Any]:
    out: dict[str, Any] = {"fhirpath": flt.fhirpath}
    if flt.value_type != infer_value_type(flt.fhirpath):
        out["valueType"] = flt.value_type
    return out


def _rule_set_json(rs: RuleSet) -> dict[str, Any]:
    fields = {f.name: _field_json(f, rs.probabilistic) for f in (*rs.phonetic_blocks, *rs.fields)}
    out: dict[str, Any] = {
        "name": rs.name,
        "matchingType": rs.matching_type,
        "fields": fields,
        "potentialMatchThreshold": rs.potential_threshold,
        "autoMatchThreshold": rs.auto_threshold,
    }
    if rs.blocking:
        out["blocking"] = [list(group) for group in rs.blocking]
    if rs.group_share:
        out["groupShare"] = rs.group_share
    if rs.filters:
        out["filters"] = {flt.name: _filter_json(flt) for flt in rs.filters}
    return out


def replace_field(rules: DecisionRules, rule_index: int, new_field: Field) -> DecisionRules:
    """A copy of ``rules`` with one field of one rule set replaced (by name)."""
    rule_sets = list(rules.rule_sets)
    rs = rule_sets[rule_index]
    fields = tuple(new_field if f.name == new_field.name else f for f in rs.fields)
    rule_sets[rule_index] = RuleSet(
        rs.index,
        rs.name,
        rs.matching_type,
        fields,
        rs.filters,
        rs.potential_threshold,
        rs.auto_threshold,
        rs.phonetic_blocks,
        rs.blocking,
        rs.group_share,
    )
    return DecisionRules(tuple(rule_sets), rules.source, rules.warnings)


def rules_from_mapping(document: Mapping[str, Any]) -> DecisionRules:
    """Shorthand for tests and callers holding a dict already."""
    return parse_rules(dict(document))


def default_rules() -> DecisionRules:
    """The decision rules shipped with the registry (``matching/default_rules.json``)."""
    with resources.files("clientregistry.matching").joinpath("default_rules.json").open() as fh:
        return parse_rules(json.load(fh), source="default rules")
