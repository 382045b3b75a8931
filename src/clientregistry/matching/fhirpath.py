"""FHIRPath expressions, checked strictly and compiled once.

``fhirpathpy`` evaluates any FHIRPath but costs ~0.15 ms an expression, and its parser
recovers silently from syntax errors. So every expression is first checked with a strict
parse (the same ANTLR grammar, errors raised), then compiled either to a fast evaluator for
the simple paths decision rules use (``name.where(use='official').given``, ``birthDate``,
``telecom.where(system='phone').value``, with ``first()``/``last()``) or to fhirpathpy for
everything else. Both give the same results; a property test holds them to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

Evaluator = Callable[[Any], list[Any]]

_IDENT = r"[a-z][A-Za-z0-9_]*"
_COND = rf"({_IDENT})\s*=\s*'([^'\\]*)'"
_SEGMENT = re.compile(
    rf"^(?:(?P<ident>{_IDENT})|where\((?P<conds>{_COND}(?:\s+and\s+{_COND})*)\)"
    r"|(?P<fn>first|last)\(\))$"
)
_COND_RE = re.compile(_COND)


class FhirPathError(ValueError):
    """A FHIRPath expression that does not parse or uses an unknown function."""


class _RaisingListener(ErrorListener):  # type: ignore[misc]
    def syntaxError(
        self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise FhirPathError(f"syntax error at column {column + 1}: {msg}")


def check_syntax(expression: str) -> None:
    """Raise :class:`FhirPathError` unless ``expression`` is one complete FHIRPath expression."""
    if not expression.strip():
        raise FhirPathError("empty expression")
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        column = tokens.LT(1).column
        raise FhirPathError(f"unexpected text at column {column + 1}: {expression[column:]!r}")
    check_functions(expression)


_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def check_functions(expression: str) -> None:
    """Raise :class:`FhirPathError` for a function fhirpathpy does not implement (it would
    otherwise fail only when evaluated)."""
    from fhirpathpy.engine.invocations import invocation_registry

    for name in _CALL.findall(_STRING.sub("''", expression)):
        if name not in invocation_registry:
            raise FhirPathError(f"unknown function {name}()")


def _split_segments(expression: str) -> list[str] | None:
    """Split on top-level dots; ``None`` if parentheses do not balance."""
    segments: list[str] = []
    depth = 0
    start = 0
    quoted = False
    for i, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            segments.append(expression[start:i].strip())
            start = i + 1
    if depth != 0 or quoted:
        return None
    segments.append(expression[start:].strip())
    return segments


Step = tuple[str, Any]
"""One step of a simple path: ``("member", name)``, ``("where", ((key, value), ...))``,
``("first", None)`` or ``("last", None)``."""


def simple_steps(expression: str) -> tuple[Step, ...] | None:
    """The steps of a simple member path (what the fast path evaluates), or ``None``."""
    segments = _split_segments(expression)
    if not segments:
        return None
    steps: list[Step] = []
    for segment in segments:
        found = _SEGMENT.match(segment)
        if found is None:
            return None
        if found.group("ident"):
            steps.append(("member", found.group("ident")))
        elif found.group("fn"):
            steps.append((found.group("fn"), None))
        else:
            conds = tuple(_COND_RE.findall(found.group("conds")))
            steps.append(("where", conds))
    return tuple(steps)


def _fast_path(expression: str) -> Evaluator | None:
    """A plain-Python evaluator for simple member paths, or ``None`` if it is not one."""
    frozen = simple_steps(expression)
    if frozen is None:
        return None

    def evaluate(resource: Any) -> list[Any]:
        items: list[Any] = [resource]
        for kind, arg in frozen:
            if kind == "member":
                out: list[Any] = []
                for item in items:
                    if isinstance(item, dict):
                        value = item.get(arg)
                        if value is None:
                            continue
                        if isinstance(value, list):
                            out.extend(v for v in value if v is not None)
                        else:
                            out.append(value)
                items = out
            elif kind == "where":
                items = [
                    item
                    for item in items
                    if isinstance(item, dict) and all(item.get(k) == v for k, v in arg)
                ]
            elif kind == "first":
                items = items[:1]
            else:
                items = items[-1:]
            if not items:
                return items
        return items

    return evaluate


def compile_path(expression: str) -> Evaluator:
    """Check ``expression`` strictly and return a function from a resource to its values."""
    check_syntax(expression)
    fast = _fast_path(expression)
    if fast is not None:
        return fast
    try:
        compiled = fhirpathpy.compile(expression)
    except Exception as error:  # fhirpathpy raises bare Exception for unknown functions
        raise FhirPathError(str(error)) from error

    def evaluate(resource: Any) -> list[Any]:
        return list(compiled(resource, {}))

    return evaluate


def compile_reference(expression: str) -> Evaluator:
    """fhirpathpy alone, without the fast path: the reference the fast path is tested against."""
    check_syntax(expression)
    compiled = fhirpathpy.compile(expression)
    return lambda resource: list(compiled(resource, {}))
