"""The web UI's languages (ui.i18n, ui.vocabulary): every string the templates and modules
show has a French translation in the shipped, compiled catalogue; the catalogue is compiled
from its .po; the language is chosen as documented; dates and numbers follow the language."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from clientregistry.ui.i18n import Texts, choose, translations
from clientregistry.ui.vocabulary import WORDS, word

UI = Path(__file__).resolve().parents[2] / "src" / "clientregistry" / "ui"
LOCALE = UI / "locale"
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def _source_messages() -> set[str | tuple[str, str]]:
    """What `make translations` extracts: every message of the templates and modules."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
    found: set[str | tuple[str, str]] = set()
    for _, _, message, _, _ in extract_from_dir(str(UI), method_map, options, keywords=KEYWORDS):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


def test_every_message_has_a_french_translation() -> None:
    catalog = read_po(io.BytesIO((LOCALE / "fr/LC_MESSAGES/messages.po").read_bytes()))
    translated = {m.id if isinstance(m.id, str) else tuple(m.id): m for m in catalog if m.id}
    messages = _source_messages()
    assert len(messages) > 300
    missing = sorted(str(m) for m in messages if m not in translated)
    assert missing == [], "run `make translations` and translate: " + "; ".join(missing[:20])
    for message in messages:
        entry = translated[message]
        assert not entry.fuzzy, message
        strings = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        assert all(s.strip() for s in strings), f"untranslated: {message!r}"
        ids = [message] if isinstance(message, str) else list(message)
        wanted = set(PLACEHOLDER.findall(" ".join(ids)))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == wanted, (message, text)


def test_the_compiled_catalogue_is_the_po() -> None:
    po = read_po(io.BytesIO((LOCALE / "fr/LC_MESSAGES/messages.po").read_bytes()))
    mo = read_mo(io.BytesIO((LOCALE / "fr/LC_MESSAGES/messages.mo").read_bytes()))

    def entries(catalog: Any) -> dict[Any, Any]:
        return {_key(m.id): _key(m.string) for m in catalog if m.id}

    compiled, written = entries(mo), entries(po)
    assert compiled == written, "run `make translations` (pybabel compile)"


def _key(value: Any) -> Any:
    return value if isinstance(value, str) else tuple(value)


def test_the_vocabulary_is_translated() -> None:
    french = Texts("fr")
    for kind, words in WORDS.items():
        for value in words:
            assert word(french, kind, value) != words[value] or words[value] in {"auto"}, value
    assert word(french, "role", "reviewer") == "vérificateur"
    assert word(french, "status", "something-new") == "something-new"


@pytest.mark.parametrize(
    ("account", "cookie", "header", "expected"),
    [
        ("fr", "en", "en-GB,en;q=0.9", "fr"),
        (None, "fr", "en", "fr"),
        (None, None, "de-DE,de;q=0.9,fr-CA;q=0.8,en;q=0.5", "fr"),
        (None, None, "fr;q=0.2,en;q=0.8", "en"),
        (None, None, "de, *;q=0.1", "en"),
        (None, "xx", "garbage;q=x,,,", "en"),
        (None, None, None, "en"),
    ],
)
def test_the_language_chosen(
    account: str | None, cookie: str | None, header: str | None, expected: str
) -> None:
    assert choose(account, cookie, header) == expected


def test_dates_and_numbers_follow_the_language() -> None:
    moment = datetime(2026, 3, 4, 15, 6, 7, tzinfo=UTC)
    english, french = Texts("en"), Texts("fr")
    assert english.number(1234567) == "1,234,567"
    assert french.number(1234567) == "1\u202f234\u202f567"
    assert french.number(3.5, 2) == "3,50"
    assert english.moment(moment).startswith("Mar 4, 2026") and english.moment(moment).endswith(
        "UTC"
    )
    assert french.moment(moment).startswith("4 mars 2026")
    assert french.short_day(date(2026, 12, 6)) == "6 déc."
    assert french.gettext("Sign in") == "Se connecter"
    assert translations("en").gettext("Sign in") == "Sign in"
    assert french.ngettext("%(num)s entry", "%(num)s entries", 2) == "2 entrées"
