"""Tests of the string comparators accepted in OpenCR decision rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientregistry.matching.comparators import (
    ALGORITHMS,
    Comparator,
    UnknownAlgorithm,
    get_comparator,
)

EXPECTED_NAMES = {
    "exact",
    "levenshtein",
    "damerau-levenshtein",
    "optimal-string-alignment",
    "jaro-winkler-similarity",
    "jaro-winkler-distance",
    "jaro-winkler",
    "normalized-levenshtein-similarity",
    "normalized-levenshtein-distance",
    "cosine-similarity",
    "cosine-distance",
    "dice-similarity",
    "dice-distance",
    "jaccard-similarity",
    "jaccard-distance",
    "normalized-lcs-similarity",
    "normalized-lcs-distance",
    "longest-common-subsequence",
    "metric-lcs",
    "ngram",
    "qgram",
    "dateDamerau",
    "soundex",
    "metaphone",
    "double-metaphone",
    "nysiis",
    "phonetic",
}

EXTENSION_NAMES = {
    "initial",
    "nickname",
    "shared-part",
    "date-swapped",
    "date-year-near",
    "date-one-part",
    "date-year",
}
"""The engine's own relations (docs/decision-rules.md), beside OpenCR's names."""

ALL_NAMES = sorted(ALGORITHMS)


def measure(name: str, a: str, b: str) -> float:
    return get_comparator(name).measure(a, b)


# --- the table ------------------------------------------------------------------------------


def test_every_opencr_name_is_supported_and_nothing_else() -> None:
    assert set(ALGORITHMS) == EXPECTED_NAMES | EXTENSION_NAMES


@pytest.mark.parametrize("name", ALL_NAMES)
def test_comparator_is_registered_under_its_own_name(name: str) -> None:
    comparator = get_comparator(name)
    assert isinstance(comparator, Comparator)
    assert comparator.name == name


@pytest.mark.parametrize(
    ("name", "kind", "normalized"),
    [
        ("exact", "similarity", True),
        ("levenshtein", "distance", False),
        ("damerau-levenshtein", "distance", False),
        ("optimal-string-alignment", "distance", False),
        ("jaro-winkler-similarity", "similarity", True),
        ("jaro-winkler-distance", "distance", True),
        ("normalized-levenshtein-similarity", "similarity", True),
        ("normalized-levenshtein-distance", "distance", True),
        ("cosine-similarity", "similarity", True),
        ("cosine-distance", "distance", True),
        ("dice-similarity", "similarity", True),
        ("dice-distance", "distance", True),
        ("jaccard-similarity", "similarity", True),
        ("jaccard-distance", "distance", True),
        ("normalized-lcs-similarity", "similarity", True),
        ("normalized-lcs-distance", "distance", True),
        ("longest-common-subsequence", "distance", False),
        ("metric-lcs", "distance", True),
        ("ngram", "distance", True),
        ("qgram", "distance", False),
        ("dateDamerau", "distance", False),
        ("soundex", "phonetic", True),
        ("metaphone", "phonetic", True),
        ("double-metaphone", "phonetic", True),
        ("nysiis", "phonetic", True),
        ("phonetic", "phonetic", True),
    ],
)
def test_kind_and_normalization(name: str, kind: str, normalized: bool) -> None:
    comparator = get_comparator(name)
    assert comparator.kind == kind
    assert comparator.normalized is normalized


def test_jaro_winkler_alias_is_the_similarity() -> None:
    alias, canonical = get_comparator("jaro-winkler"), get_comparator("jaro-winkler-similarity")
    assert alias.kind == canonical.kind == "similarity"
    assert alias.measure("martha", "marhta") == canonical.measure("martha", "marhta")


def test_phonetic_is_metaphone() -> None:
    # robert RBRT, rupert RPRT under metaphone (soundex would say R163 for both)
    assert measure("phonetic", "robert", "rupert") == measure("metaphone", "robert", "rupert")
    assert measure("phonetic", "knight", "night") == 1.0


# --- unknown names --------------------------------------------------------------------------


def test_unknown_algorithm_is_a_key_error_carrying_the_name() -> None:
    with pytest.raises(UnknownAlgorithm) as caught:
        get_comparator("levenstein")
    assert isinstance(caught.value, KeyError)
    assert caught.value.name == "levenstein"
    message = str(caught.value)
    assert "'levenstein'" in message
    assert "did you mean 'levenshtein'" in message
    for name in EXPECTED_NAMES:
        assert name in message


def test_unknown_algorithm_without_a_close_name() -> None:
    with pytest.raises(UnknownAlgorithm, match="unknown algorithm 'zzz'; valid algorithms are"):
        get_comparator("zzz")


def test_names_are_case_sensitive() -> None:
    with pytest.raises(UnknownAlgorithm):
        get_comparator("Levenshtein")


# --- known values: edit distances -----------------------------------------------------------


def test_exact() -> None:
    assert measure("exact", "anna", "anna") == 1.0
    assert measure("exact", "anna", "ana") == 0.0
    assert get_comparator("exact").agrees("anna", "anna", 1.0)
    assert not get_comparator("exact").agrees("anna", "anne", 1.0)


def test_levenshtein() -> None:
    assert measure("levenshtein", "kitten", "sitting") == 3
    assert measure("levenshtein", "ca", "abc") == 3
    assert measure("levenshtein", "", "abc") == 3


def test_damerau_is_unrestricted_and_osa_is_not() -> None:
    # 'ca' -> 'ac' (transpose) -> 'abc' (insert) needs editing a transposed pair, which only
    # the true Damerau-Levenshtein distance allows.
    assert measure("damerau-levenshtein", "ca", "abc") == 2
    assert measure("optimal-string-alignment", "ca", "abc") == 3
    # a plain adjacent transposition costs 1 in both, 2 in Levenshtein
    assert measure("damerau-levenshtein", "martha", "marhta") == 1
    assert measure("optimal-string-alignment", "martha", "marhta") == 1
    assert measure("levenshtein", "martha", "marhta") == 2


def test_normalized_levenshtein() -> None:
    # 3 edits / 7 characters
    assert measure("normalized-levenshtein-distance", "kitten", "sitting") == pytest.approx(3 / 7)
    assert measure("normalized-levenshtein-similarity", "kitten", "sitting") == pytest.approx(4 / 7)


def test_jaro_winkler() -> None:
    jw = get_comparator("jaro-winkler-similarity").measure
    # martha/marhta: 6 matches, 1 transposition: jaro = (1 + 1 + 5/6) / 3 = 0.9444;
    # common prefix 'mar' (3): 0.9444 + 3 * 0.1 * (1 - 0.9444) = 0.9611
    assert jw("martha", "marhta") == pytest.approx(0.961111, abs=1e-6)
    assert measure("jaro-winkler-distance", "martha", "marhta") == pytest.approx(0.038889, abs=1e-6)
    assert jw("dixon", "dicksonx") == pytest.approx(0.813333, abs=1e-6)
    assert jw("dwayne", "duane") == pytest.approx(0.84)
    assert jw("abc", "xyz") == 0.0


# --- known values: LCS family ---------------------------------------------------------------


def test_longest_common_subsequence() -> None:
    # lcs('martha', 'marhta') = 5 ('marta'): 6 + 6 - 2*5 = 2
    assert measure("longest-common-subsequence", "martha", "marhta") == 2
    # nothing in common: 2 + 2 - 0 = 4
    assert measure("longest-common-subsequence", "ab", "cd") == 4


def test_metric_lcs() -> None:
    # 1 - lcs / max(len) = 1 - 5/6
    assert measure("metric-lcs", "martha", "marhta") == pytest.approx(1 / 6)
    assert measure("metric-lcs", "ab", "cd") == 1.0


def test_normalized_lcs() -> None:
    # lcs distance / max(len) = 2 / 6
    assert measure("normalized-lcs-distance", "martha", "marhta") == pytest.approx(1 / 3)
    assert measure("normalized-lcs-similarity", "martha", "marhta") == pytest.approx(2 / 3)
    # 4 / 2 = 2 in the Elasticsearch plugin; clamped to 1 here
    assert measure("normalized-lcs-distance", "ab", "cd") == 1.0
    assert measure("normalized-lcs-similarity", "ab", "cd") == 0.0


# --- known values: shingle measures (k = 3) -------------------------------------------------

# 'martha' -> {mar, art, rth, tha}; 'marhta' -> {mar, arh, rht, hta}; one shingle in common.


def test_cosine() -> None:
    # dot = 1, |a| = |b| = sqrt(4) = 2: 1 / (2 * 2)
    assert measure("cosine-similarity", "martha", "marhta") == pytest.approx(0.25)
    assert measure("cosine-distance", "martha", "marhta") == pytest.approx(0.75)
    # 'abcd' {abc, bcd} vs 'abce' {abc, bce}: 1 / (sqrt 2 * sqrt 2) = 0.5
    assert measure("cosine-similarity", "abcd", "abce") == pytest.approx(0.5)


def test_cosine_uses_shingle_counts() -> None:
    # 'aaaaa' {aaa: 3} vs 'aaa' {aaa: 1}: 3 / (3 * 1) -- same direction
    assert measure("cosine-similarity", "aaaaa", "aaa") == pytest.approx(1.0)
    # 'aaaab' {aaa: 2, aab: 1} vs 'aaab' {aaa: 1, aab: 1}: (2 + 1) / (sqrt 5 * sqrt 2)
    assert measure("cosine-similarity", "aaaab", "aaab") == pytest.approx(3 / 10**0.5)


def test_jaccard() -> None:
    # |∩| = 1, |∪| = 4 + 4 - 1 = 7
    assert measure("jaccard-similarity", "martha", "marhta") == pytest.approx(1 / 7)
    assert measure("jaccard-distance", "martha", "marhta") == pytest.approx(6 / 7)
    # sets, not counts: {aaa} vs {aaa}
    assert measure("jaccard-similarity", "aaaaa", "aaa") == 1.0


def test_dice() -> None:
    # 2 * 1 / (4 + 4)
    assert measure("dice-similarity", "martha", "marhta") == pytest.approx(0.25)
    assert measure("dice-distance", "martha", "marhta") == pytest.approx(0.75)
    # 'abcd' {abc, bcd} vs 'abcde' {abc, bcd, cde}: 2 * 2 / (2 + 3)
    assert measure("dice-similarity", "abcd", "abcde") == pytest.approx(0.8)


def test_qgram() -> None:
    # 3 shingles only in 'martha' + 3 only in 'marhta'
    assert measure("qgram", "martha", "marhta") == 6
    # counts: |3 - 1| for aaa
    assert measure("qgram", "aaaaa", "aaa") == 2
    # 'abcd' vs 'abcde': only cde differs
    assert measure("qgram", "abcd", "abcde") == 1


@pytest.mark.parametrize("name", ["cosine-similarity", "jaccard-similarity", "dice-similarity"])
def test_shingle_similarity_of_strings_shorter_than_k(name: str) -> None:
    # the whole string is the only shingle
    assert measure(name, "al", "al") == 1.0
    assert measure(name, "al", "ab") == 0.0
    assert measure(name, "al", "alb") == 0.0
    assert measure(name, "", "al") == 0.0


def test_qgram_of_strings_shorter_than_k() -> None:
    assert measure("qgram", "al", "al") == 0
    assert measure("qgram", "al", "ab") == 2  # {al} vs {ab}
    assert measure("qgram", "", "ab") == 1  # {} vs {ab}


# --- known values: Kondrak n-gram (n = 2) ---------------------------------------------------


def test_ngram() -> None:
    # bigrams with a start pad '#': abc -> #a ab bc, abd -> #a ab bd. Aligned one to one:
    # #a/#a = 0, ab/ab = 0, bc/bd = 1 of 2 positions differ = 0.5; total 0.5 / max(3, 3)
    assert measure("ngram", "abc", "abd") == pytest.approx(1 / 6)
    # ab -> #a ab, ba -> #b ba. Best path: #a/#b 1 (the matching pad does not count, 1/1),
    # then ab/ba 2/2 = 1 -> 2, and no cheaper path with insertions/deletions: 2 / 2
    assert measure("ngram", "ab", "ba") == 1.0
    # a change at the start weighs more than one at the end (padding)
    assert measure("ngram", "xbc", "abc") > measure("ngram", "abx", "abc")


def test_ngram_of_strings_shorter_than_n() -> None:
    # the share of positions that differ
    assert measure("ngram", "a", "ab") == pytest.approx(0.5)
    assert measure("ngram", "a", "b") == 1.0
    assert measure("ngram", "", "ab") == 1.0


# --- known values: dates --------------------------------------------------------------------


def test_date_damerau() -> None:
    assert measure("dateDamerau", "1974-12-25", "1974-12-52") == 1  # day digits swapped
    assert measure("dateDamerau", "1974-12-25", "1947-12-25") == 1  # year digits swapped
    assert measure("dateDamerau", "1974-12-25", "1975-12-25") == 1  # one digit wrong
    assert measure("dateDamerau", "1974-12-25", "19741225") == 0  # separators ignored
    # 19741225 vs 19740102: 1225 -> 0102 needs 3 edits
    assert measure("dateDamerau", "1974-12-25", "1974-01-02") == 3
    assert get_comparator("dateDamerau").agrees("1974-12-25", "1974-12-52", 1)
    assert not get_comparator("dateDamerau").agrees("1974-12-25", "1974-01-02", 2)


# --- known values: phonetic -----------------------------------------------------------------


def test_soundex() -> None:
    # robert R163, rupert R163, rubin R150
    assert measure("soundex", "robert", "rupert") == 1.0
    assert measure("soundex", "robert", "rubin") == 0.0
    # knight K523, night N230
    assert measure("soundex", "knight", "night") == 0.0


def test_metaphone() -> None:
    assert measure("metaphone", "robert", "rupert") == 0.0  # RBRT vs RPRT
    assert measure("metaphone", "knight", "night") == 1.0  # NT
    assert measure("metaphone", "catherine", "kathryn") == 1.0  # K0RN
    assert measure("metaphone", "smith", "schmidt") == 0.0  # SM0 vs SXMTT


def test_double_metaphone() -> None:
    # smith (SM0, XMT) and schmidt (XMT, SMT) share XMT
    assert measure("double-metaphone", "smith", "schmidt") == 1.0
    # jonathan (JN0N, ANTN) and jonatan (JNTN, ANTN) share only the alternate ANTN
    assert measure("double-metaphone", "jonathan", "jonatan") == 1.0
    assert measure("metaphone", "jonathan", "jonatan") == 0.0
    # thompson TMPSN vs tomson TMSN
    assert measure("double-metaphone", "thompson", "tomson") == 0.0


def test_nysiis() -> None:
    assert measure("nysiis", "john", "jon") == 1.0  # JAN
    assert measure("nysiis", "stephen", "steven") == 1.0  # STAFAN
    assert measure("nysiis", "robert", "rupert") == 0.0  # RABAD vs RAPAD
    assert measure("nysiis", "smith", "schmidt") == 0.0  # SNAT vs SNAD


@pytest.mark.parametrize("name", ["soundex", "metaphone", "double-metaphone", "nysiis"])
def test_phonetic_codes_each_word(name: str) -> None:
    assert measure(name, "mary ann", "marie anne") == 1.0
    assert measure(name, "mary ann", "ann mary") == 0.0  # order matters
    assert measure(name, "mary ann", "mary") == 0.0  # so does the number of words


@pytest.mark.parametrize("name", ["metaphone", "double-metaphone"])
def test_words_without_a_code_stand_for_themselves(name: str) -> None:
    # metaphone codes '123' as '': it must not agree with every other code-less word
    assert measure(name, "123", "456") == 0.0
    assert measure(name, "123", "123") == 1.0


# --- agrees at thresholds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "a", "b", "threshold", "expected"),
    [
        # levenshtein('kitten', 'sitting') = 3
        ("levenshtein", "kitten", "sitting", 2, False),
        ("levenshtein", "kitten", "sitting", 3, True),
        ("levenshtein", "kitten", "sitting", 4, True),
        # levenshtein('abcd', 'wxyz') = 4
        ("levenshtein", "abcd", "wxyz", 3, False),
        ("levenshtein", "abcd", "wxyz", 4, True),
        ("levenshtein", "abcd", "wxyz", 5, True),
        ("levenshtein", "anna", "anna", 0, True),
        ("damerau-levenshtein", "ca", "abc", 1, False),
        ("damerau-levenshtein", "ca", "abc", 2, True),
        ("optimal-string-alignment", "ca", "abc", 2, False),
        ("optimal-string-alignment", "ca", "abc", 3, True),
        # jaro-winkler('martha', 'marhta') ≈ 0.9611
        ("jaro-winkler-similarity", "martha", "marhta", 0.96, True),
        ("jaro-winkler-similarity", "martha", "marhta", 0.97, False),
        ("jaro-winkler", "martha", "marhta", 0.96, True),
        ("jaro-winkler-distance", "martha", "marhta", 0.04, True),
        ("jaro-winkler-distance", "martha", "marhta", 0.03, False),
        # normalized levenshtein 4/7 ≈ 0.571 similar, 3/7 ≈ 0.429 distant
        ("normalized-levenshtein-similarity", "kitten", "sitting", 0.57, True),
        ("normalized-levenshtein-similarity", "kitten", "sitting", 0.58, False),
        ("normalized-levenshtein-distance", "kitten", "sitting", 0.43, True),
        ("normalized-levenshtein-distance", "kitten", "sitting", 0.42, False),
        ("cosine-similarity", "abcd", "abce", 0.5, True),
        ("cosine-similarity", "abcd", "abce", 0.51, False),
        ("qgram", "martha", "marhta", 6, True),
        ("qgram", "martha", "marhta", 5, False),
        ("ngram", "abc", "abd", 0.17, True),
        ("ngram", "abc", "abd", 0.16, False),
        ("exact", "anna", "anna", 1.0, True),
        ("exact", "anna", "ann", 1.0, False),
        ("soundex", "robert", "rupert", 1.0, True),
        ("soundex", "robert", "rubin", 1.0, False),
    ],
)
def test_agrees_on_both_sides_of_the_threshold(
    name: str, a: str, b: str, threshold: float, expected: bool
) -> None:
    comparator = get_comparator(name)
    assert comparator.agrees(a, b, threshold) is expected
    assert comparator.agrees(b, a, threshold) is expected


# --- similarity() ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "a", "b", "expected"),
    [
        ("levenshtein", "kitten", "sitting", 4 / 7),  # 1 - 3/7
        ("damerau-levenshtein", "ca", "abc", 1 / 3),  # 1 - 2/3
        ("optimal-string-alignment", "ca", "abc", 0.0),  # 1 - 3/3
        ("longest-common-subsequence", "martha", "marhta", 2 / 3),  # 1 - 2/6
        ("longest-common-subsequence", "ab", "cd", 0.0),  # 1 - 4/2, clamped
        ("qgram", "abcd", "abcde", 0.8),  # 1 - 1/5
        ("dateDamerau", "1974-12-25", "1974-12-52", 0.9),  # 1 - 1/10
        ("normalized-levenshtein-distance", "kitten", "sitting", 4 / 7),
        ("jaro-winkler-distance", "martha", "marhta", 0.961111),
        ("metric-lcs", "martha", "marhta", 5 / 6),
        ("cosine-distance", "martha", "marhta", 0.25),
        ("cosine-similarity", "martha", "marhta", 0.25),
        ("ngram", "abc", "abd", 5 / 6),
        ("exact", "anna", "ann", 0.0),
        ("double-metaphone", "smith", "schmidt", 1.0),
        ("soundex", "robert", "rubin", 0.0),
    ],
)
def test_similarity_known_values(name: str, a: str, b: str, expected: float) -> None:
    assert get_comparator(name).similarity(a, b) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_two_empty_strings_are_identical(name: str) -> None:
    comparator = get_comparator(name)
    identical = 0.0 if comparator.kind == "distance" else 1.0
    assert comparator.measure("", "") == identical
    assert comparator.similarity("", "") == 1.0


# --- properties -----------------------------------------------------------------------------

# Small alphabets make near-matches (shared shingles, transpositions, equal codes) common.
names_like = st.text(alphabet="abcdeilmnorst ", max_size=12)
dates_like = st.text(alphabet="0123456789-", max_size=12)
any_text = st.text(max_size=16)
strings = st.one_of(names_like, dates_like, any_text)


@pytest.mark.parametrize("name", ALL_NAMES)
@given(a=strings, b=strings)
def test_measure_and_similarity_are_symmetric(name: str, a: str, b: str) -> None:
    comparator = get_comparator(name)
    assert comparator.measure(a, b) == comparator.measure(b, a)
    assert comparator.similarity(a, b) == comparator.similarity(b, a)


@pytest.mark.parametrize("name", ALL_NAMES)
@given(a=strings, b=strings)
def test_values_are_in_range(name: str, a: str, b: str) -> None:
    comparator = get_comparator(name)
    value = comparator.measure(a, b)
    assert value >= 0.0
    if comparator.normalized:
        assert value <= 1.0
    assert 0.0 <= comparator.similarity(a, b) <= 1.0


@pytest.mark.parametrize("name", ALL_NAMES)
@given(a=strings)
def test_a_string_is_identical_to_itself(name: str, a: str) -> None:
    comparator = get_comparator(name)
    assert comparator.similarity(a, a) == 1.0
    identical = 0.0 if comparator.kind == "distance" else 1.0
    assert comparator.measure(a, a) == identical
    assert comparator.agrees(a, a, identical)


@pytest.mark.parametrize("name", ["levenshtein", "damerau-levenshtein", "optimal-string-alignment"])
@given(a=names_like, b=names_like)
def test_agrees_matches_the_distance(name: str, a: str, b: str) -> None:
    comparator = get_comparator(name)
    d = comparator.measure(a, b)
    assert comparator.agrees(a, b, d)
    assert not comparator.agrees(a, b, d - 1)


@given(a=names_like, b=names_like)
def test_qgram_is_at_most_2k_times_levenshtein(a: str, b: str) -> None:
    # Ukkonen: one edit changes at most k shingles on each side, so qgram <= 2k * levenshtein
    assert measure("qgram", a, b) <= 6 * measure("levenshtein", a, b)
