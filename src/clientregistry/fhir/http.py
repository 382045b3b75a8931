"""The HTTP headers of the FHIR RESTful API: versions (``ETag``, ``If-Match``), dates
(``Last-Modified``) and preferences (``Prefer``).

* ``ETag: W/"3"`` names version 3 of a resource; ``If-Match`` takes the same form (or
  ``"3"``, or ``*`` for "any version"), :func:`parse_if_match`.
* ``Last-Modified`` is an RFC 7231 HTTP-date (``Tue, 01 Oct 2024 12:30:00 GMT``),
  :func:`http_date`: the resource's ``meta.lastUpdated`` to the second.
* ``Prefer`` (RFC 7240) carries ``return=minimal|representation|OperationOutcome`` (what a
  create or update answers with) and ``handling=strict|lenient`` (what a search does with
  parameters it does not know), :func:`parse_prefer`. Unknown preferences are ignored, as
  RFC 7240 says; a known one with an unknown value is a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final, Literal

from clientregistry.fhir.errors import bad_request

ANY_VERSION: Final = "*"
"""``If-Match: *``: the resource must exist, whatever its version."""

Return = Literal["minimal", "representation", "OperationOutcome"]
Handling = Literal["strict", "lenient"]

_ETAG = re.compile(r'\s*(?:W/)?"([1-9][0-9]{0,9})"\s*')
_RETURNS: Final[dict[str, Return]] = {
    "minimal": "minimal",
    "representation": "representation",
    "operationoutcome": "OperationOutcome",
}
_HANDLINGS: Final[dict[str, Handling]] = {"strict": "strict", "lenient": "lenient"}


def http_date(moment: datetime) -> str:
    """``moment`` as an RFC 7231 HTTP-date, in GMT (it must be time-zone aware)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an HTTP-date needs a time-zone aware datetime")
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_if_match(value: str, *, name: str = "If-Match") -> int | Literal["*"]:
    """The version an ``If-Match`` header (or ``Bundle.entry.request.ifMatch``) asks for:
    ``W/"3"`` or ``"3"`` → 3, ``*`` → :data:`ANY_VERSION`; 400 for anything else."""
    if value.strip() == ANY_VERSION:
        return ANY_VERSION
    match = _ETAG.fullmatch(value)
    if match is None:
        raise bad_request(
            f'{name}: {value[:80]!r} is not a version tag; send W/"<version>" as the ETag '
            "gave it (or * for any version)"
        )
    return int(match.group(1))


@dataclass(frozen=True, slots=True)
class Preferences:
    """What a ``Prefer`` header asks for (None: not said)."""

    return_: Return | None = None
    handling: Handling | None = None


def parse_prefer(values: list[str]) -> Preferences:
    """The ``Prefer`` header(s): comma- or semicolon-separated ``token[=value]``."""
    return_: Return | None = None
    handling: Handling | None = None
    for value in values:
        for part in re.split(r"[,;]", value):
            token, _, raw = part.strip().partition("=")
            key = token.strip().lower()
            wanted = raw.strip().strip('"')
            if key == "return":
                found = _RETURNS.get(wanted.lower())
                if found is None:
                    raise bad_request(
                        f"Prefer: return={wanted[:40]!r} is not one of minimal, "
                        "representation, OperationOutcome"
                    )
                return_ = found
            elif key == "handling":
                chosen = _HANDLINGS.get(wanted.lower())
                if chosen is None:
                    raise bad_request(
                        f"Prefer: handling={wanted[:40]!r} is not one of strict, lenient"
                    )
                handling = chosen
    return Preferences(return_, handling)


__all__ = [
    "ANY_VERSION",
    "Handling",
    "Preferences",
    "Return",
    "http_date",
    "parse_if_match",
    "parse_prefer",
]
