"""The id of the HTTP request being served, for whatever records it: the response's
``X-Request-Id`` header, the log lines, the audit events.

A context variable: each request runs in a task (or a thread-pool call) of its own, which
sees the id its request set and no other. Outside a request it is ``None``.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-Id"
_ACCEPTED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""A caller's (or a front proxy's) own id is kept when it looks like one: 1-64 letters,
digits, ``.``, ``_``, ``:``, ``-``; anything else is replaced."""

_current: ContextVar[str | None] = ContextVar("clientregistry_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, or None."""
    return _current.get()


def start_request(incoming: str | None) -> str:
    """Set (and return) the id of the request now being served: ``incoming`` when it is an
    acceptable id, else a new one (a UUID's 32 hex digits)."""
    request_id = incoming if incoming and _ACCEPTED.fullmatch(incoming) else uuid.uuid4().hex
    _current.set(request_id)
    return request_id


BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"


def with_request_id(audit_event: dict[str, Any]) -> dict[str, Any]:
    """A FHIR AuditEvent with the current request's id added as IHE BALP records it (an
    ``entity`` of type ``XrequestId`` whose ``what.identifier.value`` is the id); unchanged
    outside a request."""
    request_id = _current.get()
    if request_id is not None:
        audit_event.setdefault("entity", []).append(
            {
                "what": {"identifier": {"value": request_id}},
                "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
            }
        )
    return audit_event
