"""Checking a resource's JSON against FHIR R4 with ``fhir.resources`` (R4B models).

R4B's Patient, Bundle and datatypes are R4's, so the R4B models check R4 content. Two passes:

1. A walk of the JSON itself, for what the pydantic models let through: unknown element names,
   JSON types (``"active": "yes"`` is not a boolean), ``null``, empty arrays and objects,
   codes outside a required value set (``gender``, ``link.type``, ``telecom.system`` ...),
   and the invariants ele-1 and ext-1.
2. ``Model.model_validate`` for the rest: dates such as ``1990-02-30``, patterns, cardinality,
   choice types, required elements.

Each problem becomes an :class:`Issue` with a FHIRPath-like expression (``Patient.name[0].given``)
and one of the issue codes below ``invalid``: ``structure`` (wrong shape), ``required``
(missing), ``value`` (bad value or code), ``invariant`` (a FHIR constraint).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from clientregistry.fhir.errors import Issue
from clientregistry.fhir.json_body import json_kind

Model = type[FHIRAbstractModel]


@dataclass(frozen=True, slots=True)
class _Field:
    many: bool
    kind: str  # boolean | integer | decimal | string | element | resource | any
    klass: Model | None = None
    codes: tuple[str, ...] | None = None


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _describe(annotation: Any, codes: tuple[str, ...] | None) -> _Field:
    annotation = _strip_optional(annotation)
    many = typing.get_origin(annotation) in (list, typing.List)  # noqa: UP006
    if many:
        annotation = _strip_optional(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_describe(a, codes) for a in typing.get_args(annotation)}
        if kinds == {_Field(False, "string", codes=codes)}:  # e.g. url: AnyUrl | str
            return _Field(many, "string", codes=codes)
        return _Field(many, "any")
    if annotation is bool:
        return _Field(many, "boolean", codes=codes)
    if annotation is int:
        return _Field(many, "integer", codes=codes)
    if annotation is Decimal:
        return _Field(many, "decimal", codes=codes)
    get_klass = getattr(annotation, "get_model_klass", None)
    if get_klass is not None:
        klass: Model = get_klass()
        kind = "resource" if issubclass(klass, Resource) else "element"
        return _Field(many, kind, klass)
    if isinstance(annotation, type):  # str, date, datetime, time, bytes, AnyUrl: JSON strings
        return _Field(many, "string", codes=codes)
    return _Field(many, "any")  # not understood: known element, value left to pydantic


_NOT_REQUIRED_BINDINGS = frozenset({"CapabilityStatement.format", "Expression.language"})
"""Elements whose ``enum_values`` in fhir.resources are not a required value set (they are
read from the element's short description: MIME types, an extensible binding)."""


@cache
def _fields(model: Model) -> dict[str, _Field]:
    out: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if name == "fhir_comments" or alias == "resourceType":
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        enum = extra.get("enum_values")
        codes = tuple(str(c) for c in enum) if isinstance(enum, list) else None
        if f"{model.__name__}.{alias}" in _NOT_REQUIRED_BINDINGS:
            codes = None
        out[alias] = _describe(info.annotation, codes)
    return out


def resource_model(resource_type: str) -> Model | None:
    """The R4B model class of a resource type name, or None if there is no such resource."""
    try:
        klass = get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        return None
    abstract = resource_type in ("Resource", "DomainResource")
    return klass if issubclass(klass, Resource) and not abstract else None


def _child(path: str, key: str) -> str:
    return f"{path}.{key[1:] if key.startswith('_') else key}"


_WANTED = {
    "boolean": "true or false",
    "integer": "an integer",
    "decimal": "a number",
    "string": "a string",
}


class _Walker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, code: str, path: str, message: str) -> None:
        self.issues.append(Issue(code, f"{path}: {message}", (path,)))

    def resource(self, obj: Mapping[str, Any], path: str) -> None:
        rtype = obj.get("resourceType")
        model = resource_model(rtype) if isinstance(rtype, str) else None
        if model is None:
            self.add("structure", path, f"{rtype!r} is not a FHIR R4 resource type")
            return
        self.element(obj, model, path)

    def element(self, obj: Mapping[str, Any], model: Model, path: str) -> None:
        is_resource = issubclass(model, Resource)
        if not is_resource and set(obj) <= {"id"}:
            self.add("invariant", path, "an element must have a value or child elements (ele-1)")
        fields = _fields(model)
        for key, value in obj.items():
            if key == "resourceType" and is_resource:
                continue
            spec = fields.get(key)
            where = _child(path, key)
            if spec is None:
                self.add("structure", where, f"unknown element '{key}'")
            elif value is None:
                self.add("structure", where, "null is not allowed; leave the element out")
            elif spec.many:
                self.array(obj, key, value, spec, where)
            elif isinstance(value, list):
                self.add("structure", where, "expected a single value, found an array")
            else:
                self.value(value, spec, where)
        if issubclass(model, Extension):
            has_value = any(k.startswith("value") for k in obj)
            if has_value == ("extension" in obj):
                self.add(
                    "invariant",
                    path,
                    "an extension must have either extensions or a value[x], not both (ext-1)",
                )

    def array(self, obj: Mapping[str, Any], key: str, value: Any, spec: _Field, where: str) -> None:
        if not isinstance(value, list):
            self.add("structure", where, f"expected an array, found {json_kind(value)}")
            return
        if not value:
            self.add("structure", where, "empty arrays are not allowed; leave the element out")
            return
        twin = obj.get(key[1:] if key.startswith("_") else "_" + key)
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if item is None:
                paired = isinstance(twin, list) and i < len(twin) and twin[i] is not None
                if not paired:
                    self.add(
                        "structure",
                        at,
                        "null is only allowed in an array of primitives "
                        "whose '_' twin has an extension at the same index",
                    )
            else:
                self.value(item, spec, at)

    def value(self, value: Any, spec: _Field, where: str) -> None:
        kind = spec.kind
        if kind in ("element", "resource"):
            if not isinstance(value, dict):
                self.add("structure", where, f"expected an object, found {json_kind(value)}")
            elif kind == "resource":
                self.resource(value, where)
            elif spec.klass is not None:
                self.element(value, spec.klass, where)
            return
        if kind == "any":
            return
        ok = {
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "decimal": isinstance(value, int | float) and not isinstance(value, bool),
            "string": isinstance(value, str),
        }[kind]
        if not ok:
            wanted = _WANTED[kind]
            self.add("structure", where, f"expected {wanted}, found {json_kind(value)} {value!r}")
        elif value == "":
            self.add("value", where, "empty strings are not allowed; leave the element out")
        elif spec.codes is not None and value not in spec.codes:
            self.add(
                "value",
                where,
                f"{value!r} is not a valid code; use one of: {', '.join(spec.codes)}",
            )


_REGEX_HINTS = {
    "Date value": "not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "DateTime value": "not a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or "
    "YYYY-MM-DDThh:mm:ss with a time zone)",
    "Instant value": "not a valid FHIR instant (YYYY-MM-DDThh:mm:ss[.sss] with a time zone)",
    "Time value": "not a valid FHIR time (hh:mm:ss)",
}


_CHOICE = re.compile(r"expected from this list \[(.*)\], but got multiple")


def _expression(root: str, loc: tuple[int | str, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            name = part.removesuffix("__ext")
            name = "resourceType" if name == "resource_type" else name
            out = _child(out, name)
    return out


def _message(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "")).removeprefix("Value error, ").strip()
    loc = err.get("loc", ())
    name = loc[-1] if loc and isinstance(loc[-1], str) else ""
    if kind == "extra_forbidden":
        return f"unknown element '{name}'"
    if kind.endswith("missing"):
        return f"the required element '{name}' is missing"
    choice = _CHOICE.search(msg)
    if choice:
        names = [n.strip(" '") for n in choice.group(1).split(",")]
        given = err.get("input")
        if isinstance(given, Mapping):
            names = [n for n in names if n in given] or names
        return f"only one of these elements may be given: {', '.join(names)}"
    ctx = err.get("ctx")
    if kind.startswith(("date", "datetime")) and isinstance(ctx, Mapping) and "error" in ctx:
        msg = f"not a valid calendar date or time: {ctx['error']}"
    for prefix, hint in _REGEX_HINTS.items():
        if msg.startswith(prefix):
            msg = hint
            break
    if "input" in err and not isinstance(err["input"], dict | list):
        return f"{msg} (found {err['input']!r})"
    return msg


def _code(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    if kind.endswith("missing"):
        return "required"
    if _CHOICE.search(str(err.get("msg", ""))) or not err.get("loc"):
        return "invariant"
    if kind in ("extra_forbidden", "json_invalid") or kind.endswith("_type"):
        return "structure"
    return "value"


def validate_resource(resource: Mapping[str, Any], model: Model, root: str) -> list[Issue]:
    """Every FHIR R4 problem of ``resource`` (JSON already parsed) as a ``model``, located
    under ``root`` (``Patient`` or ``Bundle.entry[3].resource``). Empty when valid."""
    walker = _Walker()
    walker.element(resource, model, root)
    issues = walker.issues
    seen = [e for i in issues for e in i.expression]
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            expr = _expression(root, tuple(err["loc"]))
            if err["loc"] and any(
                expr == s or expr.startswith((s + ".", s + "[")) or s.startswith(expr + ".")
                for s in seen
            ):
                continue
            detail = typing.cast(Mapping[str, Any], err)
            issues.append(Issue(_code(detail), f"{expr}: {_message(detail)}", (expr,)))
            seen.append(expr)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if not issues:
            issues.append(Issue("invalid", f"{root}: cannot be read as FHIR R4: {exc}", (root,)))
    return issues
