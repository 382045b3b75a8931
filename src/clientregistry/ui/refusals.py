"""A use case's refusal in the page's language, from its ``code`` and ``params``.

:class:`~clientregistry.registry.actor.Refused` carries an English message for the API and a
code for user interfaces; the codes a person can meet in the web UI have a translated
message here. An unknown code falls back on a translated sentence followed by the English
detail, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from clientregistry.registry.actor import Refused
from clientregistry.ui.i18n import Texts


def _messages(texts: Texts) -> dict[str, Callable[[dict[str, Any]], str]]:
    _ = texts.gettext
    return {
        "not-found": lambda p: _("Nothing was found there: it may have been removed or moved."),
        "already-resolved": lambda p: _(
            "Another reviewer, %(by)s, already decided this item (%(when)s). "
            "Nothing was changed: open the next item.",
            by=p.get("by") or "?",
            when=texts.moment(_parse(p.get("at"))),
        ),
        "already-confirmed": lambda p: _(
            "This automatic link was already confirmed or decided by a person."
        ),
        "only-record": lambda p: _(
            "This record is the only one of its person: there is nothing to break it from."
        ),
        "already-linked": lambda p: _("The record already belongs to that person."),
        "broken-match": lambda p: _(
            "The record is marked as not the same person as a record there; "
            "revert that break first."
        ),
        "changed-since": lambda p: _(
            "This action cannot be reverted: what it changed has changed since."
        ),
        "no-broken-match": lambda p: _("This record has no break to revert."),
        "retired": lambda p: _("That person was merged into another: use the other one."),
        "not-revertible": lambda p: _("This entry is not an action that can be reverted."),
        "unknown-user": lambda p: _("There is no such account."),
        "user-exists": lambda p: _("An account with that name already exists."),
        "bad-password": lambda p: _(
            "The password was refused: use at least 12 characters that are not all spaces."
        ),
        "last-admin": lambda p: _(
            "This is the last enabled admin account: add another admin first."
        ),
        "bad-account": lambda p: _(
            "The account name was refused: use letters, digits, '.', '_', '@' or '-'."
        ),
        "wrong-password": lambda p: _("The current password is wrong."),
        "unknown-language": lambda p: _("That language is not available."),
        "bad-date": lambda p: _("Give the birth date as YYYY, YYYY-MM or YYYY-MM-DD."),
        "bad-gender": lambda p: _("Choose a gender from the list."),
        "gender": lambda p: _("A gender alone finds half the registry: add another criterion."),
        "bad-system": lambda p: _("Choose a source system from the list."),
        "system-alone": lambda p: _(
            "A source system alone lists every person it knows: add another criterion."
        ),
        "bad-identifier": lambda p: _("An identifier system goes with an identifier value."),
        "too-long": lambda p: _("A search value is too long."),
        "bad-patient": lambda p: _("That is not a valid FHIR Patient: %(detail)s", detail=""),
        "naive-datetime": lambda p: _("Give dates with a time zone."),
        "bad-days": lambda p: _("Choose between 1 and 366 days."),
    }


def _parse(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def refusal_message(texts: Texts, refused: Refused) -> str:
    """What to tell the person, in their language."""
    found = _messages(texts).get(refused.code)
    if found is not None:
        message = found(refused.params)
        if refused.code == "bad-patient":
            return f"{message}{refused.message}"
        return message
    return texts.gettext("The registry refused this: %(detail)s", detail=refused.message)
