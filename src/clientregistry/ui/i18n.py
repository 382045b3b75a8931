"""Languages of the web UI: Babel message catalogues, choosing a language, and dates and
numbers written the way each language writes them.

The catalogues live in the package (``ui/locale/<lang>/LC_MESSAGES/messages.po`` and the
compiled ``.mo``; ``make translations`` extracts the strings of the templates and modules,
updates the ``.po`` files and compiles them). English is the source language.

A person's language is the one they chose (their account), else the ``cr_lang`` cookie (the
sign-in page's switch), else the first of the browser's ``Accept-Language`` the UI speaks,
else English. Times are shown in UTC.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any, Final

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_skeleton, format_timedelta
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LANGUAGES: Final = ("en", "fr")
DEFAULT: Final = "en"
LANGUAGE_COOKIE: Final = "cr_lang"
DOMAIN: Final = "messages"


@functools.cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of ``language`` (English: the messages as written)."""
    if language == DEFAULT:
        return NullTranslations()
    directory = resources.files("clientregistry.ui").joinpath("locale")
    with resources.as_file(directory) as path:
        return Translations.load(str(path), [language], DOMAIN)


def _accepted(header: str) -> list[str]:
    """The languages of an ``Accept-Language`` header, most wanted first."""
    ranked = []
    for position, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose(
    account: str | None, cookie: str | None = None, accept_language: str | None = None
) -> str:
    """The language to speak: the account's, the cookie's, the browser's, or English."""
    for choice in (account, cookie):
        if choice in LANGUAGES:
            return str(choice)
    for tag in _accepted(accept_language or ""):
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT


@dataclass(frozen=True, slots=True)
class Texts:
    """Translated messages and formatting in one language."""

    language: str

    @property
    def locale(self) -> Locale:
        return _locale(self.language)

    def gettext(self, message: str, **values: Any) -> str:
        text = translations(self.language).gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        text = translations(self.language).ngettext(singular, plural, n)
        return text % {"num": n, **values}

    def moment(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        text = format_datetime(moment, "medium", tzinfo=UTC, locale=self.locale)
        return f"{text} UTC"

    def day(self, day: date | datetime | None) -> str:
        if day is None:
            return ""
        return format_date(day, "medium", locale=self.locale)

    def short_day(self, day: date) -> str:
        """A day without its year ("6 Dec", "6 déc.")."""
        return format_skeleton(
            "MMMd", datetime.combine(day, datetime.min.time()), locale=self.locale
        )

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return ""
        if digits:
            pattern = "#,##0." + "0" * digits
            return format_decimal(value, pattern, locale=self.locale)
        return format_decimal(value, locale=self.locale)

    def age(self, moment: datetime | None, now: datetime | None = None) -> str:
        """How long ago ``moment`` was ("3 days")."""
        if moment is None:
            return ""
        since = (now or datetime.now(UTC)) - moment
        return format_timedelta(
            max(since, timedelta(0)), threshold=1.0, format="long", locale=self.locale
        )


@functools.cache
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT)
