"""The Jinja2 templates of the web UI, one environment per language.

Templates autoescape everything (a Patient named ``<script>`` shows as text) and translate
with the ``i18n`` extension (``{% trans %}``, ``_()``, ``ngettext``, new-style: values are
escaped too). Each language has its environment, built once, so pages rendered at the same
time in two languages do not share state. Filters format dates, numbers and ages in the
page's language.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from clientregistry.ui import charts
from clientregistry.ui.i18n import LANGUAGES, Texts, translations
from clientregistry.ui.vocabulary import word

STATIC_VERSION = "2"
"""Bumped when the stylesheet or script change (their URLs carry it; they are cached)."""


@functools.cache
def environment(language: str) -> Environment:
    """The template environment of ``language``."""
    env = Environment(
        loader=PackageLoader("clientregistry.ui", "templates"),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    texts = Texts(language)
    env.filters.update(
        datetime=texts.moment,
        date=texts.day,
        number=texts.number,
        age=texts.age,
    )
    env.globals.update(
        texts=texts,
        language=language,
        languages=LANGUAGES,
        static_version=STATIC_VERSION,
        charts=charts,
        word=functools.partial(word, texts),
    )
    return env


def render(language: str, template: str, values: dict[str, Any]) -> str:
    """A template rendered in ``language``."""
    return environment(language).get_template(template).render(values)
