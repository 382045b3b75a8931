"""FHIR XML on the wire, through ``fhir.resources`` (its R4B models; ``lxml`` parses).

PIXm and PDQm say a server SHALL read and write XML as well as JSON. The registry works in
JSON; this module converts at the edge: :func:`xml_to_json` reads a request body (any
resource type, checked against the model of its root element) into the FHIR JSON the routes
read, :func:`json_to_xml` writes a response resource as XML. No hand-written mapping: both
ways go through the models, which know FHIR's XML rules (``value`` attributes, primitive
extensions, the XHTML narrative).

XML from callers is parsed without network access, DTDs or entities: a body with a
``DOCTYPE`` is refused (no entity expansion attacks), as is anything that is not well-formed
XML in the FHIR namespace. Every problem is a :class:`FhirError` (400, or 413 over the
limit).
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import pydantic
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from clientregistry.fhir.errors import FhirError, payload_too_large

FHIR_NAMESPACE: Final = "http://hl7.org/fhir"
MAX_ERRORS: Final = 10
"""Problems listed in one answer to an invalid body."""


def _parser() -> etree.XMLParser:
    """A parser that fetches nothing, expands nothing and keeps no comments (a new one per
    body: lxml parsers are not shared between threads)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _structure(message: str) -> FhirError:
    return FhirError(400, "structure", message)


def xml_to_json(body: bytes, *, max_bytes: int) -> dict[str, Any]:
    """The resource of an XML body as FHIR JSON (a ``dict``), or a :class:`FhirError`."""
    if len(body) > max_bytes:
        raise payload_too_large(len(body), max_bytes)
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as error:
        raise _structure(f"The body is not well-formed XML: {error}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise _structure("The XML has a DOCTYPE; FHIR XML has none (DTDs and entities are refused)")
    qname = etree.QName(root)
    if qname.namespace != FHIR_NAMESPACE:
        raise _structure(
            f"The XML root element <{qname.localname}> is not in the FHIR namespace "
            f"{FHIR_NAMESPACE}"
        )
    try:
        model = get_fhir_model_class(qname.localname)
    except (KeyError, ValueError):
        raise FhirError(
            400, "invalid", f"The XML root element <{qname.localname}> is not a FHIR resource"
        ) from None
    try:
        parsed = model.model_validate_xml(body, xmlparser=_parser())
    except pydantic.ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or qname.localname}: {e['msg']}"
            for e in error.errors()[:MAX_ERRORS]
        ]
        raise FhirError(
            400, "invalid", f"The {qname.localname} is not valid FHIR: {'; '.join(problems)}"
        ) from None
    except Exception as error:  # the library parses untrusted input: any failure is the body's
        detail = f"unknown element {error}" if isinstance(error, KeyError) else str(error)
        raise _structure(f"The body is not valid FHIR XML: {detail[:300]}") from None
    out: dict[str, Any] = orjson.loads(parsed.model_dump_json())
    return out


def json_to_xml(resource: dict[str, Any]) -> bytes:
    """A resource (FHIR JSON, as the registry serves it) as FHIR XML."""
    model = get_fhir_model_class(resource["resourceType"])
    written = model.model_validate(resource).model_dump_xml()
    return written if isinstance(written, bytes) else written.encode("utf-8")


__all__ = ["FHIR_NAMESPACE", "json_to_xml", "xml_to_json"]
