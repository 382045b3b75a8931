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
registry keeps the same keys in SQLite or PostgreSQL). A query returns at most ``limit``
candidates, those sharing most keys first; when the cap bites the caller is told, so it can
log a warning. :class:`PositionIndex` serves ``clientregistry dedupe`` and a re-match's
replay, and the registry makes the same choice in SQL (:func:`select_candidates`): of the
records sharing just one key with the new one it takes only a few, from the rarest keys, and
it reads only the newest records of a block, so that the work per record does not grow with
the data (common names pile up in big blocks). :class:`MemoryIndex` takes every record
sharing a key (training's blocking passes, the Spark engine's ``dedupe`` reproduces it).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
from array import array
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

KEY_DERIVATION = 1
"""Version of the key functions' code: raise it when a key function gives other keys for the
same value, so that registries make their stored records' keys again
(:meth:`Blocker.signature`)."""

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


DEFAULT_SINGLE_LIMIT = 8
"""Most candidates scored for one record that share only one key with it (rarest keys first),
in :class:`PositionIndex`."""

DEFAULT_BLOCK_LIMIT = 100
"""Records read from one block, newest first, in :class:`PositionIndex`."""


class PositionIndex:
    """The in-memory index of ``clientregistry dedupe`` (and of its reader process): records
    are positions (ints, in input order), selection is term-frequency aware, and memory stays
    small at millions of records.

    **Selection.** Candidates sharing two or more keys with the record are ranked as
    :class:`MemoryIndex` ranks them (most shared keys first, ties in first-seen order: keys in
    the record's order, each block oldest first). Candidates sharing just one key are many and
    rarely the same person when that key is common ("John Smith"): a block grows with the file,
    so scoring them all makes the cost per record grow with the file too. At most
    ``single_limit`` of them are taken, from the smallest blocks first (ties in key order),
    each block newest first. The whole is cut at ``limit`` (then ``capped``). A block is read
    only as far as its newest ``block_limit`` records: a key shared by more (a common name with
    a birth month and day) counts only for those, so the work per record stays bounded however
    large the file; and a block of more than ``block_limit`` records counts as
    ``block_limit + 1`` records in the "smallest first" order, since the registry, which makes
    the same choice in SQL, reads no further to count it.

    **Memory.** A key is kept as its 64-bit hash (two different keys sharing a hash only add a
    candidate, at odds of about 1e-5 for ten million keys) in an open-addressing table of
    arrays; each block is a chain of postings (record, previous posting) in two more arrays:
    about 40 bytes per key instead of about 200 for a dict of key strings to lists.
    """

    _EMPTY = 0

    def __init__(
        self,
        single_limit: int = DEFAULT_SINGLE_LIMIT,
        block_limit: int = DEFAULT_BLOCK_LIMIT,
        capacity: int = 1 << 16,
    ) -> None:
        self.single_limit = single_limit
        self.block_limit = block_limit
        size = 1 << max(4, (capacity - 1).bit_length())
        self._mask = size - 1
        self._hashes = array("q", bytes(8 * size))
        self._heads = array("i", bytes(4 * size))  # posting number + 1 (0: empty)
        self._sizes = array("i", bytes(4 * size))
        self._keys = 0
        self._records = array("i")  # posting -> record position
        self._next = array("i")  # posting -> previous posting of its block + 1 (0: none)

    def __len__(self) -> int:
        return self._keys

    def _slot(self, key: str) -> tuple[int, int]:
        """(slot, hash) of ``key``: its slot, or the empty slot where it would go."""
        h = hash(key) or 1
        mask, hashes = self._mask, self._hashes
        i = h & mask
        while True:
            found = hashes[i]
            if found == h or found == 0:
                return i, h
            i = (i + 1) & mask

    def _grow(self) -> None:
        old = self._hashes, self._heads, self._sizes
        size = 2 * len(old[0])
        self._mask = mask = size - 1
        self._hashes = hashes = array("q", bytes(8 * size))
        self._heads = heads = array("i", bytes(4 * size))
        self._sizes = sizes = array("i", bytes(4 * size))
        for h, head, count in zip(*old, strict=True):
            if h:
                i = h & mask
                while hashes[i]:
                    i = (i + 1) & mask
                hashes[i], heads[i], sizes[i] = h, head, count

    def _block(self, head: int) -> list[int]:
        """A block's newest :attr:`block_limit` records, oldest first, from its newest
        posting (+1)."""
        records, chain = self._records, self._next
        out = []
        left = self.block_limit
        while head and left:
            out.append(records[head - 1])
            head = chain[head - 1]
            left -= 1
        out.reverse()
        return out

    def add(self, record: int, keys: Sequence[str]) -> None:
        """Add ``record`` under ``keys`` (distinct, as :meth:`Blocker.keys` gives them)."""
        self._room(len(keys))
        for key in keys:
            self._append(self._slot(key), record)

    def _room(self, keys: int) -> None:
        """Grow the table (at most two thirds full) before up to ``keys`` keys are added."""
        while 3 * (self._keys + keys) > 2 * (self._mask + 1):
            self._grow()

    def _append(self, where: tuple[int, int], record: int) -> None:
        i, h = where
        if self._hashes[i] != h:  # a new key; its slot may have been taken since the look-up
            i = self._slot_of_hash(h)
            if not self._hashes[i]:
                self._hashes[i] = h
                self._keys += 1
        self._records.append(record)
        self._next.append(self._heads[i])
        self._heads[i] = len(self._records)
        self._sizes[i] += 1

    def _slot_of_hash(self, h: int) -> int:
        mask, hashes = self._mask, self._hashes
        i = h & mask
        while hashes[i] and hashes[i] != h:
            i = (i + 1) & mask
        return i

    def candidates(self, keys: Sequence[str], limit: int) -> CandidateSet:
        blocks = []
        sizes = []
        for key in keys:
            i, _ = self._slot(key)
            if self._heads[i]:
                blocks.append(self._block(self._heads[i]))
                sizes.append(min(self._sizes[i], self.block_limit + 1))
        return select_candidates(blocks, sizes, limit, self.single_limit)

    def find_then_add(self, record: int, keys: Sequence[str], limit: int) -> CandidateSet:
        """:meth:`candidates` and then :meth:`add`, with one look-up per key."""
        self._room(len(keys))
        blocks = []
        sizes = []
        slots = []
        heads = self._heads
        for key in keys:
            where = self._slot(key)
            slots.append(where)
            if heads[where[0]]:
                blocks.append(self._block(heads[where[0]]))
                sizes.append(min(self._sizes[where[0]], self.block_limit + 1))
        result = select_candidates(blocks, sizes, limit, self.single_limit)
        for where in slots:
            self._append(where, record)
        return result


def select_candidates(
    blocks: Sequence[Sequence[Hashable]], sizes: Sequence[int], limit: int, single_limit: int
) -> CandidateSet:
    """The selective choice of candidates among the records of ``blocks`` (one per key of the
    record, in its keys' order; each the block's newest records as read, oldest first;
    ``sizes``: how many records each block holds in all, counted as far as its newest
    ``block_limit + 1``): :class:`PositionIndex`'s, and the
    registry's (:mod:`clientregistry.store.blocking_index` makes the same choice in SQL, with
    record ids for positions). See :class:`PositionIndex`."""
    if not blocks:
        return CandidateSet([], False, 0)
    counts: dict[Hashable, int] = {}
    for block in blocks:
        _count_elements(counts, block)
    shared = [record for record, n in counts.items() if n > 1]
    if len(shared) > 1:
        shared.sort(key=counts.__getitem__, reverse=True)  # stable: ties stay first-seen
    singles: list[Hashable] = []
    if single_limit > 0 and len(shared) < limit:
        order = sorted(range(len(blocks)), key=sizes.__getitem__)  # ties stay in key order
        for n in order:
            for record in reversed(blocks[n]):
                if counts[record] == 1:
                    singles.append(record)
                    if len(singles) == single_limit:
                        break
            else:
                continue
            break
    chosen = shared + singles
    if len(chosen) > limit:
        return CandidateSet(chosen[:limit], True, len(counts))
    return CandidateSet(chosen, False, len(counts))


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
        return [tuple(position[item.partition(":")[0]] for item in group) for group in rs.blocking]
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


def _key_transforms(rs: RuleSet, groups: list[tuple[int, ...]]) -> list[tuple[str, ...]]:
    """For each group of :func:`plan_key_groups`, how each field enters its keys: ``""`` (the
    field's own keys) or a transform of :data:`~clientregistry.matching.rules.KEY_TRANSFORMS`
    written ``"field:transform"`` in the rules' ``blocking`` groups."""
    if not rs.blocking:
        return [("",) * len(group) for group in groups]
    return [tuple(item.partition(":")[2] for item in group) for group in rs.blocking]


def _initial(value: Any) -> list[str]:
    """The first letter of a value's first word."""
    return [value[0]] if isinstance(value, str) and value else []


def _transform_function(f: Field, transform: str) -> Callable[[Any], list[str]]:
    """How a field's (present) value enters keys under ``transform``."""
    if transform == "initial":
        return _initial
    if transform == "value":
        return _identity
    return key_function(f)


def _swap_aliases(rs: RuleSet) -> dict[str, str]:
    """field name -> the name it shares with the field it may be swapped with.

    Only two-way swaps (``swappedWith``: given and family names) share a name; a one-way
    ``crossWith`` (a first name among the other record's middle names) does not, or the
    name given would depend on the order of the fields in the rules file."""
    out: dict[str, str] = {}
    for f in rs.fields:
        for level in f.levels:
            if level.swapped_with is not None and not level.one_way:
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
            used: dict[tuple[str, str], int] = {}
            sources: list[tuple[int, Callable[[Any], list[str]]]] = []
            groups = []
            alias = _swap_aliases(rs)
            planned = plan_key_groups(rs)
            for group, transforms in zip(planned, _key_transforms(rs, planned), strict=True):
                members = [rs.fields[i] for i in group]
                positions = []
                for f, transform in zip(members, transforms, strict=True):
                    if (f.name, transform) not in used:
                        used[(f.name, transform)] = len(sources)
                        sources.append((extractor.slot(f), _transform_function(f, transform)))
                    positions.append(used[(f.name, transform)])
                suffixes = [f":{t}" if t else "" for t in transforms]
                names = " + ".join(f.name + x for f, x in zip(members, suffixes, strict=True))
                # Fields whose values may be swapped (given/family) share one name in tags, so
                # [given, birthDate] and [family, birthDate] keys meet when names are swapped.
                tag = "+".join(
                    alias.get(f.name, f.name) + x for f, x in zip(members, suffixes, strict=True)
                )
                groups.append((tag, tuple(positions), _swappable(rs, members), names))
            filters = tuple(extractor.slot(flt) for flt in rs.filters)
            phonetic = tuple(extractor.slot(f) for f in rs.phonetic_blocks)
            self._plans.append((rs.index, tuple(sources), tuple(groups), filters, phonetic))
        self._compiled: Callable[[Features], list[str]] | None = None

    def signature(self) -> str:
        """A digest of how keys are derived (slots, key functions, groups, filters): records
        keyed under another signature hold other keys for the same features."""
        plans = [
            [
                index,
                [[slot, getattr(make, "__name__", repr(make))] for slot, make in sources],
                [[tag, list(positions), unordered] for tag, positions, unordered, _ in groups],
                list(filters),
                list(phonetic),
            ]
            for index, sources, groups, filters, phonetic in self._plans
        ]
        text = json.dumps([KEY_DERIVATION, plans], separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

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
