"""String comparison algorithms accepted in OpenCR decision rules.

Each name that OpenCR's ``decisionRules.json`` accepts as an ``algorithm`` maps to a
:class:`Comparator`. OpenCR takes most of them from tdebatty's java-string-similarity library
(through IntraHealth's similarity-scoring Elasticsearch plugin), so the semantics follow that
library: 3-shingles for cosine / jaccard / dice / qgram, Kondrak's n-gram distance with n = 2,
``longest-common-subsequence`` = len(a) + len(b) - 2·lcs, ``metric-lcs`` = 1 - lcs / max(len).

A comparator is one of four kinds:

* ``distance``   -- 0 means identical; two strings agree when the distance <= threshold;
* ``similarity`` -- 1 means identical (0..1); two strings agree when similarity >= threshold;
* ``phonetic``   -- 1.0 when every word has the same phonetic code, else 0.0; compared like a
  similarity.
* ``relation``   -- 1.0 when a relation holds between the two values (or they are equal),
  else 0.0 (compared like a similarity, no threshold): the engine's own name and date
  levels: ``initial`` (one name is the initial of the other, word by word), ``nickname``
  (name variants by the ``nicknames`` package: Bill / William), ``shared-part`` (two names
  share a word: compound and hyphenated family names), ``date-swapped`` (day and month
  swapped), ``date-year-near`` (year one apart, day and month equal), ``date-one-part``
  (year, month or day differs, the other two equal) and ``date-year`` (the same year;
  partial dates too).

Inputs are expected to be normalised already (lower case, no accents, single spaces); only the
phonetic codes and ``dateDamerau`` (which keeps the digits) derive anything from them.
Edit distances come from rapidfuzz, phonetic codes from jellyfish and DoubleMetaphone; only
the shingle measures and Kondrak's n-gram distance are written here.

Where the Java code has an edge-case bug, the intent wins: a string shorter than 3 is its own
only shingle (tdebatty gives it none, so qgram('al', 'ab') would be 0); ``ngram`` on strings
shorter than 2 returns the share of differing positions (tdebatty returns the agreeing share);
``normalized-lcs-*`` is clamped to [0, 1]. Jaro-Winkler is the standard one (common prefix
counted up to 4 characters; tdebatty counts the whole prefix). ``dateDamerau`` is the
Damerau-Levenshtein distance between the digits of the two dates.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import ne
from types import MappingProxyType
from typing import Literal

import jellyfish
from doublemetaphone import doublemetaphone
from rapidfuzz.distance import (
    OSA,
    DamerauLevenshtein,
    Indel,
    JaroWinkler,
    LCSseq,
    Levenshtein,
)

__all__ = [
    "ALGORITHMS",
    "BOOLEAN_KINDS",
    "Comparator",
    "Kind",
    "UnknownAlgorithm",
    "get_comparator",
]

Kind = Literal["distance", "similarity", "phonetic", "relation"]

BOOLEAN_KINDS = ("phonetic", "relation")
"""Kinds whose measure is 1.0 or 0.0 and whose threshold is always 1."""

SHINGLE_K = 3
"""Shingle length of cosine, jaccard, dice and qgram (tdebatty's default k)."""

NGRAM_N = 2
"""n of Kondrak's n-gram distance (tdebatty's default)."""


@dataclass(frozen=True, slots=True)
class Comparator:
    """One string-comparison algorithm as named in ``decisionRules.json``.

    ``measure`` gives the raw value: a distance (>= 0, 0 = identical), a similarity
    (0..1, 1 = identical) or, for phonetic kinds, 1.0 when the codes agree else 0.0.
    ``normalized`` is True when ``measure`` always lies in 0..1.
    """

    name: str
    kind: Kind
    measure: Callable[[str, str], float]
    normalized: bool

    def agrees(self, a: str, b: str, threshold: float) -> bool:
        """Whether ``a`` and ``b`` match at ``threshold`` (<= for distances, >= otherwise)."""
        if self.kind == "distance":
            return self.measure(a, b) <= threshold
        return self.measure(a, b) >= threshold

    def similarity(self, a: str, b: str) -> float:
        """A symmetric similarity in [0, 1] (1 = identical), to explain and grade matches.

        Raw distances are scaled by the longer input: ``1 - d / max(len(a), len(b), 1)``,
        clamped to [0, 1].
        """
        value = self.measure(a, b)
        if self.kind != "distance":
            return value
        if self.normalized:
            return 1.0 - value
        return min(1.0, max(0.0, 1.0 - value / max(len(a), len(b), 1)))


class UnknownAlgorithm(KeyError):
    """A decision rule names an algorithm that does not exist; ``name`` is that name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        close = difflib.get_close_matches(self.name, ALGORITHMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(sorted(ALGORITHMS))
        return f"unknown algorithm {self.name!r}{hint}; valid algorithms are: {valid}"


# --- shingle (k-gram) measures ------------------------------------------------------------


@lru_cache(maxsize=65536)
def _profile(s: str) -> Counter[str]:
    """Counts of the 3-shingles of ``s``; a non-empty shorter string is its own only shingle.

    The result is cached and shared: callers must not modify it.
    """
    if len(s) < SHINGLE_K:
        return Counter((s,)) if s else Counter()
    return Counter(s[i : i + SHINGLE_K] for i in range(len(s) - SHINGLE_K + 1))


def _cosine_similarity(a: str, b: str) -> float:
    """Cosine of the angle between the 3-shingle count vectors."""
    if a == b:
        return 1.0
    pa, pb = _profile(a), _profile(b)
    if len(pa) > len(pb):
        pa, pb = pb, pa
    dot = sum(count * pb[shingle] for shingle, count in pa.items() if shingle in pb)
    if dot == 0:
        return 0.0
    # One sqrt of the integer product keeps the result <= 1 and symmetric.
    norms = sum(c * c for c in pa.values()) * sum(c * c for c in pb.values())
    return dot / math.sqrt(norms)


def _cosine_distance(a: str, b: str) -> float:
    return 1.0 - _cosine_similarity(a, b)


def _jaccard_similarity(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| over the sets of 3-shingles."""
    if a == b:
        return 1.0
    sa, sb = _profile(a).keys(), _profile(b).keys()
    inter = len(sa & sb)
    return inter / (len(sa) + len(sb) - inter)


def _jaccard_distance(a: str, b: str) -> float:
    return 1.0 - _jaccard_similarity(a, b)


def _dice_similarity(a: str, b: str) -> float:
    """Sørensen-Dice: 2·|A ∩ B| / (|A| + |B|) over the sets of 3-shingles."""
    if a == b:
        return 1.0
    sa, sb = _profile(a).keys(), _profile(b).keys()
    return 2 * len(sa & sb) / (len(sa) + len(sb))


def _dice_distance(a: str, b: str) -> float:
    return 1.0 - _dice_similarity(a, b)


def _qgram_distance(a: str, b: str) -> float:
    """Ukkonen's q-gram distance: Σ |count_a(g) - count_b(g)| over all 3-shingles g."""
    if a == b:
        return 0.0
    pa, pb = _profile(a), _profile(b)
    return float(sum(abs(pa[g] - pb[g]) for g in pa.keys() | pb.keys()))


# --- Kondrak n-gram distance -----------------------------------------------------------------


def _ngram_distance(a: str, b: str) -> float:
    """Kondrak's normalised n-gram distance (n = 2), as in tdebatty's ``NGram``.

    An edit distance over the n-grams ending at each character (the start padded with a
    special character), where substituting one n-gram for another costs the fraction of its
    positions that differ; divided by the longer length.
    """
    if a == b:
        return 0.0
    la, lb = len(a), len(b)
    if la == 0 or lb == 0:
        return 1.0
    n = NGRAM_N
    if la < n or lb < n:
        # Too short for n-grams: the share of positions that differ. (tdebatty returns the
        # share that agree here, which is a similarity; this is the corrected distance.)
        same = sum(x == y for x, y in zip(a, b, strict=False))
        return 1.0 - same / max(la, lb)
    pad = "\n" * (n - 1)
    padded_a, padded_b = pad + a, pad + b
    grams_a = [padded_a[i : i + n] for i in range(la)]
    prev = [float(i) for i in range(la + 1)]
    for j in range(1, lb + 1):
        gram_b = padded_b[j - 1 : j - 1 + n]
        cur = [float(j)]
        for i, gram_a in enumerate(grams_a, start=1):
            # Share of the positions that differ; padding present in both grams (their first
            # n - max(i, j) positions) is left out of the count.
            cost = 0.0 if gram_a == gram_b else sum(map(ne, gram_a, gram_b)) / min(n, max(i, j))
            cur.append(min(cur[i - 1] + 1.0, prev[i] + 1.0, prev[i - 1] + cost))
        prev = cur
    return prev[la] / max(la, lb)


# --- LCS and edit distances ----------------------------------------------------------------


def _normalized_lcs_distance(a: str, b: str) -> float:
    """The similarity-scoring plugin's normalised LCS distance, clamped to [0, 1].

    The plugin divides the LCS distance (len(a) + len(b) - 2·lcs) by the longer length, which
    can reach 2; clamping keeps it normalised without changing any decision at a threshold
    between 0 and 1.
    """
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    return min(1.0, Indel.distance(a, b) / longest)


def _normalized_lcs_similarity(a: str, b: str) -> float:
    return 1.0 - _normalized_lcs_distance(a, b)


def _exact(a: str, b: str) -> float:
    return 1.0 if a == b else 0.0


_NOT_DIGIT = re.compile(r"[^0-9]")


@lru_cache(maxsize=65536)
def _date_digits(value: str) -> str:
    if len(value) == 10 and value[4] == "-" and value[7] == "-":  # ISO, as normalised
        return value[:4] + value[5:7] + value[8:]
    return _NOT_DIGIT.sub("", value)


def _date_damerau(a: str, b: str) -> float:
    """Damerau-Levenshtein distance between the digits of two dates ('1974-12-25' → 19741225)."""
    return float(DamerauLevenshtein.distance(_date_digits(a), _date_digits(b)))


# --- phonetic codes ------------------------------------------------------------------------


def _word_coder(encode: Callable[[str], str]) -> Callable[[str], tuple[str, ...]]:
    """Code every word of a string; a word with no code (e.g. digits) stands for itself."""

    @lru_cache(maxsize=65536)
    def codes(s: str) -> tuple[str, ...]:
        return tuple(encode(word) or word for word in s.split())

    return codes


def _phonetic(encode: Callable[[str], str]) -> Callable[[str, str], float]:
    """1.0 when both strings have the same sequence of word codes, else 0.0."""
    codes = _word_coder(encode)

    def measure(a: str, b: str) -> float:
        return 1.0 if a == b or codes(a) == codes(b) else 0.0

    return measure


@lru_cache(maxsize=65536)
def _double_metaphone_codes(s: str) -> tuple[frozenset[str], ...]:
    """For every word, its primary and alternate codes (an empty code does not count)."""
    return tuple(
        frozenset(code for code in doublemetaphone(word) if code) or frozenset((word,))
        for word in s.split()
    )


def _double_metaphone(a: str, b: str) -> float:
    """1.0 when, word by word, a primary or alternate code of one equals one of the other."""
    if a == b:
        return 1.0
    ca, cb = _double_metaphone_codes(a), _double_metaphone_codes(b)
    if len(ca) != len(cb):
        return 0.0
    return 1.0 if all(x & y for x, y in zip(ca, cb, strict=True)) else 0.0


_soundex = _phonetic(jellyfish.soundex)
_metaphone = _phonetic(jellyfish.metaphone)
_nysiis = _phonetic(jellyfish.nysiis)


def _jaro_winkler_distance(a: str, b: str) -> float:
    return 1.0 - JaroWinkler.similarity(a, b)


# --- name relations --------------------------------------------------------------------------


def _initial(a: str, b: str) -> float:
    """1.0 when, word by word over the shorter value, each pair is equal or one word is a
    single letter starting the other, and at least one is such an initial ("j" / "josephine",
    "j r" / "john robert")."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    initial = False
    for x, y in zip(a.split(), b.split(), strict=False):
        if x == y:
            continue
        if (len(x) == 1 and y.startswith(x)) or (len(y) == 1 and x.startswith(y)):
            initial = True
            continue
        return 0.0
    return 1.0 if initial else 0.0


@lru_cache(maxsize=1)
def _name_variants() -> tuple[Mapping[str, frozenset[str]], Mapping[str, frozenset[str]]]:
    """(name -> its nicknames, nickname -> its full names), from the ``nicknames`` package."""
    from nicknames import NickNamer

    namer = NickNamer()
    nicknames = {k: frozenset(v) for k, v in namer.nickname_lookup.items()}
    canonicals = {k: frozenset(v) for k, v in namer.canonical_lookup.items()}
    return MappingProxyType(nicknames), MappingProxyType(canonicals)


@lru_cache(maxsize=1 << 16)
def _variants_of(word: str) -> frozenset[str]:
    """Every name ``word`` may stand for or be written as: its nicknames, its full names and
    their other nicknames (Bill: William, Will, Billy, ...)."""
    nicknames, canonicals = _name_variants()
    full = canonicals.get(word, frozenset())
    out = set(nicknames.get(word, frozenset())) | full
    for name in full:
        out |= nicknames.get(name, frozenset())
    out.discard(word)
    return frozenset(out)


def _nickname(a: str, b: str) -> float:
    """1.0 when the first words of the two names are variants of one name (Bill / William,
    Peggy / Margaret, Bill / Will), by the ``nicknames`` package's hand-curated list."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    wa, wb = a.split(maxsplit=1), b.split(maxsplit=1)
    if not wa or not wb:
        return 0.0
    x, y = wa[0], wb[0]
    return 1.0 if x == y or y in _variants_of(x) or x in _variants_of(y) else 0.0


def _shared_part(a: str, b: str) -> float:
    """1.0 when two names share a word of two letters or more ("garcia lopez" / "lopez",
    "smith jones" (hyphenated, normalised) / "jones")."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    words = {w for w in a.split() if len(w) > 1}
    return 1.0 if any(w in words for w in b.split() if len(w) > 1) else 0.0


# --- date relations (normalised ISO dates, possibly partial) ---------------------------------


def _date_parts(value: str) -> tuple[str, str, str]:
    return value[:4], value[5:7], value[8:10]


def _date_swapped(a: str, b: str) -> float:
    """1.0 when day and month are swapped (1960-02-11 / 1960-11-02)."""
    if a == b:
        return 1.0
    if len(a) != 10 or len(b) != 10:
        return 0.0
    ya, ma, da = _date_parts(a)
    yb, mb, db = _date_parts(b)
    return 1.0 if ya == yb and ma == db and da == mb and ma != da else 0.0


def _date_year_near(a: str, b: str) -> float:
    """1.0 when the years are one apart and month and day equal."""
    if a == b:
        return 1.0
    if len(a) != 10 or len(b) != 10 or a[4:] != b[4:]:
        return 0.0
    return 1.0 if a[:4].isdigit() and b[:4].isdigit() and abs(int(a[:4]) - int(b[:4])) == 1 else 0.0


def _date_one_part(a: str, b: str) -> float:
    """1.0 when exactly one of year, month and day differs (full dates)."""
    if a == b:
        return 1.0
    if len(a) != 10 or len(b) != 10:
        return 0.0
    same = sum(x == y for x, y in zip(_date_parts(a), _date_parts(b), strict=True))
    return 1.0 if same == 2 else 0.0


def _date_year(a: str, b: str) -> float:
    """1.0 when the years are the same (one or both dates may be partial: "1960")."""
    if a == b:
        return 1.0
    return 1.0 if len(a) >= 4 and a[:4] == b[:4] else 0.0


# --- the table -----------------------------------------------------------------------------

_ALL: tuple[Comparator, ...] = (
    Comparator("exact", "similarity", _exact, True),
    Comparator("levenshtein", "distance", Levenshtein.distance, False),
    Comparator("damerau-levenshtein", "distance", DamerauLevenshtein.distance, False),
    Comparator("optimal-string-alignment", "distance", OSA.distance, False),
    Comparator("jaro-winkler-similarity", "similarity", JaroWinkler.similarity, True),
    Comparator("jaro-winkler", "similarity", JaroWinkler.similarity, True),
    Comparator("jaro-winkler-distance", "distance", _jaro_winkler_distance, True),
    Comparator(
        "normalized-levenshtein-similarity", "similarity", Levenshtein.normalized_similarity, True
    ),
    Comparator(
        "normalized-levenshtein-distance", "distance", Levenshtein.normalized_distance, True
    ),
    Comparator("cosine-similarity", "similarity", _cosine_similarity, True),
    Comparator("cosine-distance", "distance", _cosine_distance, True),
    Comparator("dice-similarity", "similarity", _dice_similarity, True),
    Comparator("dice-distance", "distance", _dice_distance, True),
    Comparator("jaccard-similarity", "similarity", _jaccard_similarity, True),
    Comparator("jaccard-distance", "distance", _jaccard_distance, True),
    Comparator("normalized-lcs-similarity", "similarity", _normalized_lcs_similarity, True),
    Comparator("normalized-lcs-distance", "distance", _normalized_lcs_distance, True),
    Comparator("longest-common-subsequence", "distance", Indel.distance, False),
    Comparator("metric-lcs", "distance", LCSseq.normalized_distance, True),
    Comparator("ngram", "distance", _ngram_distance, True),
    Comparator("qgram", "distance", _qgram_distance, False),
    Comparator("dateDamerau", "distance", _date_damerau, False),
    Comparator("soundex", "phonetic", _soundex, True),
    Comparator("metaphone", "phonetic", _metaphone, True),
    Comparator("phonetic", "phonetic", _metaphone, True),
    Comparator("double-metaphone", "phonetic", _double_metaphone, True),
    Comparator("nysiis", "phonetic", _nysiis, True),
    Comparator("initial", "relation", _initial, True),
    Comparator("nickname", "relation", _nickname, True),
    Comparator("shared-part", "relation", _shared_part, True),
    Comparator("date-swapped", "relation", _date_swapped, True),
    Comparator("date-year-near", "relation", _date_year_near, True),
    Comparator("date-one-part", "relation", _date_one_part, True),
    Comparator("date-year", "relation", _date_year, True),
)

ALGORITHMS: Mapping[str, Comparator] = MappingProxyType({c.name: c for c in _ALL})
"""Every algorithm name accepted in decision rules (``jaro-winkler`` is an older alias)."""


def get_comparator(name: str) -> Comparator:
    """The comparator called ``name``; raises :class:`UnknownAlgorithm` if there is none."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UnknownAlgorithm(name) from None
