"""Patient search (PDQm ITI-78): ``GET /fhir/Patient``, ``GET|POST /fhir/Patient/_search``.

Systems allowed to read demographics may search by anything, and so may people with the
reviewer (or admin) role, by bearer token. Systems allowed to read identifiers only (the
default for a point-of-service system) may search by ``identifier``, ``_id`` and ``active``
— OpenCR's CRUID look-up, ``identifier=system|value&_include=Patient:link`` — and see source
records without demographics (ids, identifiers, links, tags); a search by demographics is
403 for them. Parameters this server does not know are left out and reported with a warning
(``Prefer: handling=lenient``, the default) or refused with 400 (``handling=strict``).
Include :data:`router` in the application before the Patient router:
``GET /fhir/Patient/_search`` would otherwise be read as ``Patient/_search``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from clientregistry.api.auth import bearer, current_user
from clientregistry.api.deps import Context, request_system
from clientregistry.api.match import fhir_base
from clientregistry.api.responses import fhir_response, preferences
from clientregistry.fhir.errors import (
    bad_request,
    forbidden,
    payload_too_large,
    unsupported_media_type,
)
from clientregistry.fhir.search_params import query_pairs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.lookup import (
    READ_DEMOGRAPHICS,
    READ_IDENTIFIERS,
    Caller,
    may_read_demographics,
    record_lookup,
    require_permission,
)
from clientregistry.registry.search import search
from clientregistry.registry.search_query import demographic_params, parse_patient_query
from clientregistry.security.users import has_role
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, Role

router = APIRouter(prefix="/fhir")

ITI = "ITI-78"
FORM = "application/x-www-form-urlencoded"


def _search(
    context: RegistryContext,
    system: ClientSystemConfig,
    caller: Caller,
    pairs: list[tuple[str, str]],
    base: str,
    strict: bool,
) -> Response:
    """Run and audit a search (refusals and failures are audited by the error handler)."""
    require_permission(system, READ_IDENTIFIERS, READ_DEMOGRAPHICS)
    query = parse_patient_query(pairs, strict=strict)
    demographics = may_read_demographics(system)
    searched = demographic_params(query)
    if searched and not demographics:
        raise forbidden(
            f"{system.name!r} may not search by demographics ({', '.join(searched)}); it may "
            "search by identifier, _id and active"
        )
    with transaction(context.sessions, write=False) as session:
        bundle, found = search(
            session, context.settings, query, base=base, demographics=demographics
        )
    detail: dict[str, Any] = {"query": "&".join(f"{k}={v}" for k, v in pairs), "results": found}
    if "total" in bundle:
        detail["total"] = bundle["total"]
    if query.ignored:
        detail["ignored"] = ",".join(name for name, _, _ in query.ignored)
    record_lookup(
        context,
        caller,
        action=AuditAction.READ,
        interaction="search-type",
        iti=ITI,
        detail=detail,
    )
    return fhir_response(bundle, 200)


def searcher(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ClientSystemConfig:
    """Who searches: a reviewer or admin by bearer token, or a client system by certificate.

    A person is seen as a caller allowed to read demographics, named by their username."""
    if credentials is None:
        return request_system(request)
    user = current_user(request, credentials)
    if not has_role(user, (Role.REVIEWER,)):
        raise forbidden(f"{user.username!r} ({user.role.value}) may not search demographics")
    return ClientSystemConfig(
        name=f"user:{user.username}",
        display_name=user.username,
        internal_id_system="",
        permissions=(READ_DEMOGRAPHICS,),
    )


Searcher = Annotated[ClientSystemConfig, Depends(searcher)]


def _caller(request: Request, system: ClientSystemConfig) -> Caller:
    return Caller(system.name, request.client.host if request.client else None)


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (lenient is the default)."""
    return preferences(request).handling == "strict"


@router.get("/Patient")
@router.get("/Patient/_search")
def search_get(request: Request, context: Context, system: Searcher) -> Response:
    """Search by URL parameters."""
    pairs = query_pairs(request.url.query) if request.url.query else []
    return _search(
        context, system, _caller(request, system), pairs, fhir_base(request), _strict(request)
    )


@router.post("/Patient/_search")
async def search_post(request: Request, context: Context, system: Searcher) -> Response:
    """Search by form-encoded body parameters (and any in the URL)."""
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    body = b""
    limit = context.settings.max_body_bytes
    if media or request.headers.get("content-length") not in (None, "0"):
        if media != FORM:
            raise unsupported_media_type(content_type, [FORM])
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise payload_too_large(size, limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    pairs = query_pairs(request.url.query) if request.url.query else []
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The form body is not UTF-8") from None
        pairs += query_pairs(text)
    return await run_in_threadpool(
        _search,
        context,
        system,
        _caller(request, system),
        pairs,
        fhir_base(request),
        _strict(request),
    )
