"""Feature extraction: each record's compared values, computed once when it is loaded.

Every distinct FHIRPath the decision rules read becomes a *slot*; a record's features are a
tuple with one normalised value per slot. Text slots hold one string (several values joined
by spaces, as OpenCR does; ``""`` when empty); ``shared-identifier`` slots hold a frozenset of
``"system|value"`` strings. Identifiers of record-id systems (the submitting systems' own ids)
are removed before any path is evaluated, so they are never compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clientregistry.matching.fhirpath import Evaluator, compile_path
from clientregistry.matching.normalize import ValueType, normalize, normalize_identifier
from clientregistry.matching.rules import SHARED_IDENTIFIER, DecisionRules, Field, Filter

Features = tuple[Any, ...]
"""One normalised value per slot: ``str`` or ``frozenset[str]``."""

SlotKey = tuple[str, ValueType, bool]
"""(FHIRPath, value type, is an identifier set)."""


def _primitive_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None  # complex values (objects) are not compared


class FeatureExtractor:
    """Compiles the rules' FHIRPaths once and turns resources into :data:`Features`."""

    def __init__(self, rules: DecisionRules, record_id_systems: Iterable[str] = ()) -> None:
        self.rules = rules
        self.record_id_systems = frozenset(record_id_systems)
        self._slots: dict[SlotKey, int] = {}
        self._evaluators: list[tuple[Evaluator, ValueType, bool]] = []
        for rule_set in rules.rule_sets:
            items: tuple[Field | Filter, ...] = (
                *rule_set.fields,
                *rule_set.phonetic_blocks,
                *rule_set.filters,
            )
            for item in items:
                self._add_slot(item)

    def _add_slot(self, item: Field | Filter) -> int:
        is_set = isinstance(item, Field) and item.algorithm == SHARED_IDENTIFIER
        key: SlotKey = (item.fhirpath, item.value_type, is_set)
        if key not in self._slots:
            self._slots[key] = len(self._evaluators)
            self._evaluators.append((compile_path(item.fhirpath), item.value_type, is_set))
        return self._slots[key]

    @property
    def slot_count(self) -> int:
        return len(self._evaluators)

    def slot(self, item: Field | Filter) -> int:
        """The slot holding ``item``'s values."""
        is_set = isinstance(item, Field) and item.algorithm == SHARED_IDENTIFIER
        return self._slots[(item.fhirpath, item.value_type, is_set)]

    def slot_names(self) -> list[str]:
        return [path for path, _, _ in self._slots]

    def without_record_ids(self, resource: Mapping[str, Any]) -> Mapping[str, Any]:
        """``resource`` with the identifiers of record-id systems left out (a shallow copy)."""
        identifiers = resource.get("identifier")
        if not self.record_id_systems or not isinstance(identifiers, list):
            return resource
        kept = [
            ident
            for ident in identifiers
            if not (isinstance(ident, dict) and ident.get("system") in self.record_id_systems)
        ]
        if len(kept) == len(identifiers):
            return resource
        copy = dict(resource)
        copy["identifier"] = kept
        return copy

    def extract(self, resource: Mapping[str, Any]) -> Features:
        """The features of one FHIR resource (a parsed JSON object)."""
        source = self.without_record_ids(resource)
        out: list[Any] = []
        for evaluate, value_type, is_set in self._evaluators:
            values = evaluate(source)
            if is_set:
                out.append(_identifier_set(values))
                continue
            parts = []
            for value in values:
                text = _primitive_text(value)
                if text is not None:
                    normal = normalize(text, value_type)
                    if normal:
                        parts.append(normal)
            out.append(" ".join(parts))
        return tuple(out)


def _identifier_set(values: list[Any]) -> frozenset[str]:
    """``"system|value"`` for each Identifier with both a system and a value."""
    out = set()
    for ident in values:
        if isinstance(ident, dict):
            system = ident.get("system")
            value = ident.get("value")
            if isinstance(system, str) and isinstance(value, str):
                normal = normalize_identifier(value)
                if normal:
                    out.add(f"{system}|{normal}")
    return frozenset(out)


def is_empty(value: Any) -> bool:
    """Whether a feature value is missing (empty string or empty set)."""
    return not value
