"""The words the pages show for the registry's own values — roles, match statuses, genders,
fields, events, queues, decisions — in the page's language.

The English words are marked with :func:`N_` so that message extraction finds them (they are
looked up at run time, by value); :func:`word` gives one in a language, or the value itself
when it has no word here.
"""

from __future__ import annotations

from typing import Final

from clientregistry.ui.i18n import Texts


def N_(message: str) -> str:
    """Mark a message for extraction without translating it now."""
    return message


WORDS: Final[dict[str, dict[str, str]]] = {
    "role": {"admin": N_("admin"), "reviewer": N_("reviewer"), "auditor": N_("auditor")},
    "status": {
        "auto": N_("linked automatically"),
        "potential": N_("potential match"),
        "conflict": N_("conflict"),
        "none": N_("no match"),
    },
    "decision": {
        "auto": N_("same person (automatic link)"),
        "potential": N_("potential match"),
        "none": N_("not a match"),
    },
    "gender": {
        "male": N_("male"),
        "female": N_("female"),
        "other": N_("other"),
        "unknown": N_("unknown"),
    },
    "field": {
        "given": N_("Given names"),
        "family": N_("Family name"),
        "birthDate": N_("Birth date"),
        "gender": N_("Gender"),
        "phone": N_("Phone"),
        "email": N_("Email"),
        "address": N_("Address"),
        "identifiers": N_("Other identifiers"),
    },
    "event": {
        "create": N_("submitted (new record)"),
        "update": N_("submitted (update)"),
        "break": N_("broke out"),
        "unbreak": N_("reverted a break"),
        "join": N_("joined"),
        "resolve": N_("decided a review item"),
        "confirm": N_("confirmed an automatic link"),
        "revert": N_("reverted an action"),
    },
    "queue": {
        "potential": N_("Potential matches"),
        "conflict": N_("Conflicts"),
        "auto": N_("Automatic links to confirm"),
    },
    "matching": {"probabilistic": N_("probabilistic"), "deterministic": N_("deterministic")},
    "agent": {"system": N_("system"), "user": N_("person")},
    "element": {
        "id": N_("Patient id"),
        "given": N_("Given names"),
        "family": N_("Family name"),
        "gender": N_("Gender"),
        "birth_date": N_("Birth date"),
        "phone": N_("Phone"),
    },
    "job": {
        "queued": N_("waiting to start"),
        "running": N_("running"),
        "interrupted": N_("interrupted"),
        "done": N_("done"),
        "failed": N_("failed"),
        "cancelled": N_("stopped"),
    },
    "phase": {
        "pending": N_("getting ready"),
        "convert": N_("preparing the records"),
        "switch": N_("switching to the new rules"),
        "plan": N_("matching every record again"),
        "apply": N_("applying the changes"),
        "finish": N_("finishing"),
        "catch-up": N_("catching up with new submissions"),
        "cleanup": N_("cleaning up"),
    },
    "outcome": {
        "new-person": N_("new person"),
        "linked": N_("linked (automatic match)"),
        "potential": N_("potential match"),
        "conflict": N_("conflict"),
        "error": N_("error"),
        "skipped": N_("skipped"),
    },
}


def word(texts: Texts, kind: str, value: str | None) -> str:
    """``value`` of vocabulary ``kind`` in ``texts``' language."""
    if value is None:
        return ""
    english = WORDS.get(kind, {}).get(value)
    return texts.gettext(english) if english is not None else value
