"""Feature extraction: each record's compared values, computed once when it is loaded.

Every distinct FHIRPath the decision rules read becomes a *slot*; a record's features are a
tuple with one normalised value per slot. Text slots hold one string (several values joined
by spaces, as OpenCR does; ``""`` when empty); ``shared-identifier`` slots hold a frozenset of
``"system|value"`` strings. Identifiers of record-id systems (the submitting systems' own ids)
are removed before any path is evaluated, so they are never compared.

Extraction runs once per record read, so the extractor writes itself one plain function (as
the scorer does, see :mod:`clientregistry.matching._fastpath`): simple paths (those
:func:`~clientregistry.matching.fhirpath.simple_steps` accepts) are inlined, a step shared by
several paths (``name.first()`` for given and family names) is evaluated once, and other paths
call their compiled evaluator. :meth:`FeatureExtractor.extract_slowly` is the plain loop over
the evaluators that the generated function must agree with (tests hold them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clientregistry.matching.fhirpath import Evaluator, Step, compile_path, simple_steps
from clientregistry.matching.normalize import ValueType, normalize, normalize_identifier
from clientregistry.matching.rules import SHARED_IDENTIFIER, DecisionRules, Field, Filter

Features = tuple[Any, ...]
"""One normalised value per slot: ``str`` or ``frozenset[str]``."""

SlotKey = tuple[str, ValueType, bool, str | None]
"""(FHIRPath, value type, is an identifier set, which words: see :attr:`Field.words`)."""


def first_word(value: str) -> str:
    """The first word (the first given name of "mary ann")."""
    return value.split(" ", 1)[0]


def other_words(value: str) -> str:
    """The words after the first (the middle names of "mary ann louise")."""
    parts = value.split(" ", 1)
    return parts[1] if len(parts) > 1 else ""


def distinct_words(value: str) -> str:
    """Each word once, in order ("smith smith jones" -> "smith jones")."""
    if " " not in value:
        return value
    return " ".join(dict.fromkeys(value.split()))


WORD_SELECTORS: dict[str, Callable[[str], str]] = {
    "first": first_word,
    "rest": other_words,
    "distinct": distinct_words,
}


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
        self._evaluators: list[tuple[Evaluator, ValueType, bool, str | None]] = []
        for rule_set in rules.rule_sets:
            items: tuple[Field | Filter, ...] = (
                *rule_set.fields,
                *rule_set.phonetic_blocks,
                *rule_set.filters,
            )
            for item in items:
                self._add_slot(item)
        self._extract = _compile_extract(
            list(self._slots), [evaluate for evaluate, _, _, _ in self._evaluators]
        )

    @staticmethod
    def _key(item: Field | Filter) -> SlotKey:
        is_set = isinstance(item, Field) and item.algorithm == SHARED_IDENTIFIER
        words = item.words if isinstance(item, Field) else None
        return (item.fhirpath, item.value_type, is_set, words)

    def _add_slot(self, item: Field | Filter) -> int:
        key = self._key(item)
        if key not in self._slots:
            self._slots[key] = len(self._evaluators)
            path, value_type, is_set, words = key
            self._evaluators.append((compile_path(path), value_type, is_set, words))
        return self._slots[key]

    @property
    def slot_count(self) -> int:
        return len(self._evaluators)

    def slot(self, item: Field | Filter) -> int:
        """The slot holding ``item``'s values."""
        return self._slots[self._key(item)]

    def slot_names(self) -> list[str]:
        return [path for path, _, _, _ in self._slots]

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
        return self._extract(self.without_record_ids(resource))

    def extract_slowly(self, resource: Mapping[str, Any]) -> Features:
        """:meth:`extract` by the plain loop over the slots' evaluators (the reference)."""
        source = self.without_record_ids(resource)
        out: list[Any] = []
        for evaluate, value_type, is_set, words in self._evaluators:
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
            joined = " ".join(parts)
            out.append(joined if words is None else WORD_SELECTORS[words](joined))
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


# ------------------------------------------------------------------ generated extraction


def _step_lines(step: Step, parent: str, target: str, root: bool) -> list[str]:
    """Lines that set ``target`` to the items ``step`` gives from ``parent`` (a sequence, or
    the resource itself when ``root``): the semantics of the fast FHIRPath evaluator."""
    kind, arg = step
    if root and kind == "member":
        return [
            f"x = {parent}.get({arg!r}) if isinstance({parent}, dict) else None",
            "if x is None:",
            f"    {target} = ()",
            "elif isinstance(x, list):",
            f"    {target} = x if None not in x else [v for v in x if v is not None]",
            "else:",
            f"    {target} = (x,)",
        ]
    parent_items = f"({parent},)" if root else parent
    if kind == "member":
        return [
            f"{target} = []",
            f"for item in {parent_items}:",
            "    if isinstance(item, dict):",
            f"        x = item.get({arg!r})",
            "        if x is not None:",
            "            if isinstance(x, list):",
            f"                {target}.extend([v for v in x if v is not None])",
            "            else:",
            f"                {target}.append(x)",
        ]
    if kind == "where":
        tests = "".join(f" and item.get({k!r}) == {v!r}" for k, v in arg)
        return [f"{target} = [item for item in {parent_items} if isinstance(item, dict){tests}]"]
    if kind == "first":
        return [f"{target} = {parent_items}[:1]"]
    return [f"{target} = {parent_items}[-1:]"]


def _leaf_lines(
    values: str, target: str, value_type: str, is_set: bool, words: str | None = None
) -> list[str]:
    """Lines that set ``target`` to the feature of a slot whose values are ``values``."""
    if is_set:
        return [f"{target} = _identifier_set({values})"]
    vt = repr(value_type)
    selected = [] if words is None else [f"{target} = _words_{words}({target})"]
    return [*_text_lines(values, target, vt), *selected]


def _text_lines(values: str, target: str, vt: str) -> list[str]:
    return [
        f"if not {values}:",
        f"    {target} = ''",
        f"elif len({values}) == 1:",
        f"    t = {values}[0]",
        "    if type(t) is not str:",
        "        t = _primitive_text(t)",
        f"    {target} = '' if t is None else normalize(t, {vt})",
        "else:",
        "    parts = []",
        f"    for t in {values}:",
        "        if type(t) is not str:",
        "            t = _primitive_text(t)",
        "        if t is not None:",
        f"            t = normalize(t, {vt})",
        "            if t:",
        "                parts.append(t)",
        f"    {target} = ' '.join(parts)",
    ]


def _compile_extract(
    slots: list[SlotKey], evaluators: list[Evaluator]
) -> Callable[[Mapping[str, Any]], Features]:
    """One function from a resource (record ids removed) to its features."""
    lines = ["def extract(r):"]
    names: dict[str, Any] = {
        "normalize": normalize,
        "_primitive_text": _primitive_text,
        "_identifier_set": _identifier_set,
        **{f"_words_{name}": select for name, select in WORD_SELECTORS.items()},
    }
    nodes: dict[tuple[Step, ...], str] = {}

    def node(steps: tuple[Step, ...]) -> str:
        """The variable holding the items of this path prefix (evaluated once)."""
        if not steps:
            return "r"
        found = nodes.get(steps)
        if found is None:
            parent = node(steps[:-1])
            found = nodes[steps] = f"n{len(nodes)}"
            for line in _step_lines(steps[-1], parent, found, root=len(steps) == 1):
                lines.append("    " + line)
        return found

    outputs = []
    for i, ((path, value_type, is_set, words), evaluate) in enumerate(
        zip(slots, evaluators, strict=True)
    ):
        steps = simple_steps(path)
        if steps is None:
            names[f"E{i}"] = evaluate
            values = f"e{i}"
            lines.append(f"    {values} = E{i}(r)")
        else:
            values = node(steps)
            if values == "r":  # an empty path cannot happen; keep the generator total
                values = "(r,)"
        target = f"o{i}"
        leaf = _leaf_lines(values, target, value_type, is_set, words)
        lines.extend("    " + line for line in leaf)
        outputs.append(target)
    lines.append(f"    return ({''.join(o + ', ' for o in outputs)})")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<feature extraction>", "exec"), names)
    function: Callable[[Mapping[str, Any]], Features] = names["extract"]
    function.__source__ = source  # type: ignore[attr-defined]
    return function
