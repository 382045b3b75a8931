"""Blocking: which stored records a new record is compared with.

A record is never compared with every other. Each record gets *blocking keys* derived from
the decision rules; records sharing a key are candidates. For every rule set:

1. Each field yields keys from its value: the value itself for exact comparisons, the
   double-metaphone code of each of the first two words of fuzzy names, the whole value of other
   text, year-month / month-day / year-day for
   fuzzy dates, the value and its last six characters for a phone number or identifier compared
   with edit distance, each
   identifier for ``shared-identifier``.
2. The minimal sets of fields whose agreement can reach the rule set's potential-match
   threshold are worked out from the weights. A field that can do it alone is a key on its own;
   otherwise keys combine two fields drawn from such a set (the most selective pair), so a true
   match that agrees on enough fields to matter shares at least one key.
3. Filters (hard blocks) and ``phonetic`` fields are part of every key of the rule set.

Keys are plain strings. :class:`BlockingIndex` is the storage interface (in memory here; the
registry keeps the same keys in SQLite or PostgreSQL); :class:`MemoryIndex` serves files.
A query returns at most ``limit`` candidates, those sharing most keys first; when the cap bites
the caller is told, so it can log a warning.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import jellyfish
from doublemetaphone import doublemetaphone

from clientregistry.matching.features import FeatureExtractor, Features
from clientregistry.matching.rules import BASE_SCORE, Field, RuleSet

log = logging.getLogger(__name__)

_count_elements: Callable[[dict[Any, int], Iterable[Any]], None]
_count_elements = collections._count_elements  # type: ignore[attr-defined]
"""What ``Counter.update`` runs (in C) to count an iterable into a dict."""

DEFAULT_CANDIDATE_LIMIT = 200
"""Most candidates scored for one record (those sharing most keys win)."""

_SELECTIVITY = {"identifier": 3, "phone": 3, "date": 2, "text": 1, "code": 0}
"""How finely a field's keys split records; below 2 a field is only a key in a pair."""
_MAX_TOKENS = 2
_MAX_SET_SIZE = 12
"""Rule sets with more fields than this get pair keys over all their fields."""


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """Candidate record ids, best first, and whether the cap cut the list short."""

    ids: list[Any]
    capped: bool
    considered: int


class BlockingIndex(Protocol):
    """Where blocking keys are kept: record id -> keys, queried by keys."""

    def add(self, record: Hashable, keys: Sequence[str]) -> None: ...

    def remove(self, record: Hashable, keys: Sequence[str]) -> None: ...

    def candidates(self, keys: Sequence[str], limit: int) -> CandidateSet: ...


class MemoryIndex:
    """A :class:`BlockingIndex` in a dict; for files and tests."""

    def __init__(self) -> None:
        self._postings: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._postings)

    def add(self, record: Hashable, keys: Sequence[str]) -> None:
        postings = self._postings
        for key in keys:
            found = postings.get(key)
            if found is None:
                postings[key] = [record]
            else:
                found.append(record)

    def remove(self, record: Hashable, keys: Sequence[str]) -> None:
        for key in keys:
            found = self._postings.get(key)
            if found is not None and record in found:
                found.remove(record)
                if not found:
                    del self._postings[key]

    def candidates(self, keys: Sequence[str], limit: int) -> CandidateSet:
        postings = self._postings
        return _ranked([found for key in keys if (found := postings.get(key))], limit)

    def find_then_add(self, record: Hashable, keys: Sequence[str], limit: int) -> CandidateSet:
        """:meth:`candidates` and then :meth:`add`, with one look-up per key. ``keys`` must
        be distinct, as :meth:`Blocker.keys` gives them."""
        postings = self._postings
        lists = []
        for key in keys:
            found = postings.get(key)
            if found is None:
                postings[key] = [record]
            else:
                lists.append(found)
        result = _ranked(lists, limit)
        for found in lists:
            found.append(record)
        return result


def _ranked(lists: list[list[Any]], limit: int) -> CandidateSet:
    """The records of these postings, those in most lists first, at most ``limit``."""
    if not lists:
        return CandidateSet([], False, 0)
    if len(lists) == 1:
        only = lists[0]
        if len(only) <= limit:
            return CandidateSet(list(only), False, len(only))
        return CandidateSet(only[-limit:], True, len(only))
    counts: dict[Any, int] = {}
    for found in lists:
        _count_elements(counts, found)
    if len(counts) > limit:
        best = [record for record, _ in Counter(counts).most_common(limit)]
        return CandidateSet(best, True, len(counts))
    # what most_common() gives: by count, ties in first-seen order (sorted is stable)
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)
    return CandidateSet(ranked, False, len(counts))


# ------------------------------------------------------------------ key derivation


@lru_cache(maxsize=1 << 16)
def _word_code(word: str) -> str:
    return doublemetaphone(word)[0] or word[:3]


def _word_codes(value: str) -> list[str]:
    return [_word_code(word) for word in value.split()[:_MAX_TOKENS]]


def _date_keys(value: str) -> list[str]:
    if len(value) != 10:
        return [value]
    year, month, day = value[:4], value[5:7], value[8:]
    return [f"ym{year}{month}", f"md{month}{day}", f"yd{year}{day}"]


def _value_and_tail(value: str) -> list[str]:
    """The value, and its last six characters (the start of phone numbers is often shared)."""
    if len(value) <= 6:
        return [value]
    return [value, f"t{value[-6:]}"]


def _identity(value: Any) -> list[str]:
    return [value]


def key_function(f: Field) -> Callable[[Any], list[str]]:
    """How a field's (present) value becomes blocking keys; chosen once per field."""
    if f.is_identifier_set:
        return sorted
    exact = _exact_only(f)
    if f.value_type == "date":
        return _identity if exact else _date_keys
    if f.value_type in ("phone", "identifier"):
        return _identity if exact else _value_and_tail
    if exact or f.value_type == "code" or not _is_name(f):
        return _identity
    return _word_codes


def field_keys(f: Field, value: Any) -> list[str]:
    """The blocking keys one field's value gives (empty when the value is missing)."""
    if not value:
        return []
    return key_function(f)(value)


def _is_name(f: Field) -> bool:
    """Names get phonetic keys; other text (addresses) is keyed on its whole value, since its
    words ("7", "street") are shared by too many records."""
    path = f.fhirpath.lower()
    return "name" in path or "given" in path or "family" in path


def _strict(comparator: Any, threshold: float) -> bool:
    """Whether an algorithm at this threshold only accepts equal strings."""
    if comparator is None or comparator.name == "exact":
        return True
    if comparator.kind in ("phonetic", "relation"):
        return False
    if comparator.kind == "distance":
        return bool(threshold <= 0.0)
    return bool(threshold >= 1.0)


def _exact_only(f: Field) -> bool:
    """Whether every agreement that adds weight needs equal values (keys can be the value)."""
    if f.levels:
        return all(_strict(lv.comparator, lv.threshold) for lv in f.levels if lv.weight > 0)
    return _strict(f.comparator, f.threshold)


def _best_weight(rs: RuleSet, f: Field) -> float:
    if rs.probabilistic:
        return max(level.weight for level in f.levels)
    return f.weight


def plan_key_groups(rs: RuleSet) -> list[tuple[int, ...]]:
    """Which fields (by position in ``rs.fields``) form keys, alone or in pairs."""
    fields = rs.fields
    if rs.blocking:
        position = {f.name: i for i, f in enumerate(fields)}
        return [tuple(position[name] for name in group) for group in rs.blocking]
    need = rs.potential_threshold - (BASE_SCORE if rs.probabilistic else 0.0)
    weights = [_best_weight(rs, f) for f in fields]
    minimal: list[tuple[int, ...]] = []
    sizes = range(1, len(fields) + 1) if len(fields) <= _MAX_SET_SIZE else range(0)
    for size in sizes:
        for combo in itertools.combinations(range(len(fields)), size):
            if any(set(m) <= set(combo) for m in minimal):
                continue
            if sum(weights[i] for i in combo) >= need:
                minimal.append(combo)
    if not minimal:  # too many fields to enumerate, or no set suffices: pair everything
        alone = [(i,) for i in range(len(fields)) if weights[i] >= need]
        rest = [i for i in range(len(fields)) if weights[i] < need]
        minimal = alone + list(itertools.combinations(rest, 2)) or [(0,)]
    groups: list[tuple[int, ...]] = []
    for combo in sorted(minimal, key=len):
        if any(set(g) <= set(combo) for g in groups):
            continue
        if len(combo) == 1 and _SELECTIVITY[fields[combo[0]].value_type] >= 2:
            groups.append(combo)
            continue
        pairs = itertools.combinations(combo, 2) if len(combo) > 1 else [(combo[0],)]
        best = max(
            pairs,
            key=lambda pair: (sum(_SELECTIVITY[fields[i].value_type] for i in pair), -max(pair)),
        )
        if any(set(g) <= set(best) for g in groups):
            continue
        groups.append(tuple(best))
    return groups


def _swap_aliases(rs: RuleSet) -> dict[str, str]:
    """field name -> the name it shares with the field it may be swapped with."""
    out: dict[str, str] = {}
    for f in rs.fields:
        for level in f.levels:
            if level.swapped_with is not None:
                shared = min(f.name, level.swapped_with)
                out[f.name] = out[level.swapped_with] = shared
    return out


def _swappable(rs: RuleSet, fields: list[Field]) -> bool:
    """Whether a two-field group's keys ignore order (the fields may be swapped, as given
    and family names are when a ``swappedWith`` level says so)."""
    if len(fields) != 2:
        return False
    first, second = fields
    return any(lv.swapped_with == second.name for lv in first.levels) or any(
        lv.swapped_with == first.name for lv in second.levels
    )


class Blocker:
    """Derives every blocking key of a record from its features."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self._plans = []
        for rs in extractor.rules.rule_sets:
            used: dict[str, int] = {}
            sources: list[tuple[int, Callable[[Any], list[str]]]] = []
            groups = []
            alias = _swap_aliases(rs)
            for group in plan_key_groups(rs):
                members = [rs.fields[i] for i in group]
                positions = []
                for f in members:
                    if f.name not in used:
                        used[f.name] = len(sources)
                        sources.append((extractor.slot(f), key_function(f)))
                    positions.append(used[f.name])
                names = " + ".join(f.name for f in members)
                # Fields whose values may be swapped (given/family) share one name in tags, so
                # [given, birthDate] and [family, birthDate] keys meet when names are swapped.
                tag = "+".join(alias.get(f.name, f.name) for f in members)
                groups.append((tag, tuple(positions), _swappable(rs, members), names))
            filters = tuple(extractor.slot(flt) for flt in rs.filters)
            phonetic = tuple(extractor.slot(f) for f in rs.phonetic_blocks)
            self._plans.append((rs.index, tuple(sources), tuple(groups), filters, phonetic))
        self._compiled: Callable[[Features], list[str]] | None = None

    def describe(self) -> list[str]:
        """Human-readable key groups, one line per group, for logs and docs."""
        return [
            f"rule set {index + 1}: {names}"
            for index, _, groups, _, _ in self._plans
            for _, _, _, names in groups
        ]

    def keys(self, features: Features) -> list[str]:
        """Every blocking key of a record."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _compile_keys(self._plans)
        return compiled(features)

    def keys_slowly(self, features: Features) -> list[str]:
        """:meth:`keys` by the plain loop over the key groups (the reference)."""
        out: list[str] = []
        for index, sources, groups, filters, phonetic in self._plans:
            prefix = str(index)
            for slot in filters:
                prefix += f"|{features[slot]}"
            for slot in phonetic:
                prefix += "|" + " ".join(jellyfish.metaphone(w) for w in features[slot].split())
            values = [make(value) if (value := features[slot]) else None for slot, make in sources]
            for tag, positions, unordered, _ in groups:
                if len(positions) == 1:
                    single = values[positions[0]]
                    if single:
                        out.extend(f"{prefix}|{tag}|{k}" for k in single)
                    continue
                parts = [values[p] for p in positions]
                if not all(parts):
                    continue
                for combo in itertools.product(*parts):  # type: ignore[arg-type]
                    joined = "|".join(sorted(combo) if unordered else combo)
                    out.append(f"{prefix}|{tag}|{joined}")
        return list(dict.fromkeys(out))


def _phonetic_key(value: str) -> str:
    return " ".join(jellyfish.metaphone(w) for w in value.split())


def _compile_keys(plans: list[Any]) -> Callable[[Features], list[str]]:
    """One function from features to keys, written from the plans (as the scorer is): each
    source's keys computed once, constant parts of keys folded into string constants, pairs
    joined without building tuples. Groups of more than two fields use the general loop."""
    names: dict[str, Any] = {"product": itertools.product, "_phonetic_key": _phonetic_key}
    lines = ["def keys(f):", "    out = []", "    add = out.append"]
    for index, sources, groups, filters, phonetic in plans:
        prefix = repr(str(index))
        for slot in filters:
            prefix += f" + '|' + f'{{f[{slot}]}}'"
        for slot in phonetic:
            prefix += f" + '|' + _phonetic_key(f[{slot}])"
        constant = not filters and not phonetic
        if not constant:
            lines.append(f"    p{index} = {prefix}")
        variables = []
        for n, (slot, make) in enumerate(sources):
            maker = f"K{index}_{n}"
            names[maker] = make
            variable = f"s{index}_{n}"
            lines.append(f"    v = f[{slot}]")
            lines.append(f"    {variable} = {maker}(v) if v else None")
            variables.append(variable)

        def head(tag: str, index: int = index, constant: bool = constant) -> str:
            """The expression for the start of this group's keys."""
            if constant:
                return repr(f"{index}|{tag}|")
            return f"p{index} + {f'|{tag}|'!r}"

        for tag, positions, unordered, _ in groups:
            parts = [variables[p] for p in positions]
            h = head(tag)
            if len(parts) == 1:
                lines.append(f"    if {parts[0]}:")
                lines.append(f"        for x in {parts[0]}:")
                lines.append(f"            add({h} + x)")
            elif len(parts) == 2:
                first, second = parts
                lines.append(f"    if {first} and {second}:")
                lines.append(f"        h = {h}")
                lines.append(f"        for x in {first}:")
                lines.append(f"            for y in {second}:")
                if unordered:
                    lines.append("                if x <= y:")
                    lines.append("                    add(h + x + '|' + y)")
                    lines.append("                else:")
                    lines.append("                    add(h + y + '|' + x)")
                else:
                    lines.append("                add(h + x + '|' + y)")
            else:
                joined = "'|'.join(sorted(c))" if unordered else "'|'.join(c)"
                lines.append(f"    if {' and '.join(parts)}:")
                lines.append(f"        h = {h}")
                lines.append(f"        for c in product({', '.join(parts)}):")
                lines.append(f"            add(h + {joined})")
    lines.append("    return list(dict.fromkeys(out))")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<blocking keys>", "exec"), names)
    function: Callable[[Features], list[str]] = names["keys"]
    function.__source__ = source  # type: ignore[attr-defined]
    return function


def union_candidates(results: Iterable[CandidateSet]) -> list[Any]:
    """Merge candidate lists, keeping first-seen order."""
    seen: dict[Any, None] = {}
    for result in results:
        for record in result.ids:
            seen.setdefault(record, None)
    return list(seen)
