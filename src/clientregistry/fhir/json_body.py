"""Reading a request body as FHIR JSON: size limit, UTF-8, strict JSON, line and column.

FHIR JSON is stricter than what :func:`json.loads` accepts: properties may not repeat and
``NaN``/``Infinity`` are not JSON at all. Numbers must also fit what the registry can store
and serialise again: integers within 64 bits (FHIR's ``integer`` is 32-bit, ``integer64``
64-bit) and decimals that are finite as a double (``1e400`` is not). Every failure is a
:class:`FhirError` (413 for a body over the limit, 400 ``structure`` otherwise) whose
diagnostics give the line and column where it can.
Numbers are read as Python ``int``/``float`` (Patient resources have no decimal elements
outside extensions).
"""

from __future__ import annotations

import json
import math
from typing import Any

from clientregistry.fhir.errors import FhirError, malformed_json, payload_too_large

_BOM = b"\xef\xbb\xbf"


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"property {key!r} appears more than once in one object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _bounded_int(text: str) -> int:
    value = int(text) if len(text) <= 20 else None  # no int() of thousands of digits
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"
        raise ValueError(f"the integer {shown} does not fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 24 else f"{text[:20]}..."
        raise ValueError(f"the number {shown} is too large for a decimal")
    return value


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - start + 1


MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (a FHIR Patient needs well under 20)."""


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def load_json(body: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``body`` as strict JSON, or raise :class:`FhirError` (413 or 400 ``structure``).

    Arrays and objects may nest at most ``max_depth`` deep (deeper is 400 ``structure``), so
    that validating the result cannot exhaust the stack.
    """
    if len(body) > max_bytes:
        raise payload_too_large(len(body), max_bytes)
    data = body[len(_BOM) :] if body.startswith(_BOM) else body
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise malformed_json("the body is not UTF-8 text", line, col) from None
    if not text.strip():
        raise malformed_json("the body is empty")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise malformed_json(exc.msg, exc.lineno, exc.colno) from None
    except _DuplicateKeyError as exc:
        raise malformed_json(str(exc)) from None
    except ValueError as exc:  # NaN / Infinity, numbers out of range, over-long digits
        raise malformed_json(str(exc)) from None
    except RecursionError:
        raise malformed_json(f"the JSON nests more than {max_depth} levels deep") from None
    if _depth_exceeds(value, max_depth):
        raise malformed_json(f"the JSON nests more than {max_depth} levels deep")
    return value


def json_kind(value: object) -> str:
    """How JSON would name the type of ``value`` ("an object", "a string", "null" ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def load_object(body: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Like :func:`load_json`, but the body must be a JSON object (a FHIR resource)."""
    value = load_json(body, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise FhirError(
            400, "structure", f"The body must be a JSON object (a resource), not {json_kind(value)}"
        )
    return value
