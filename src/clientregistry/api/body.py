"""Reading request bodies: media type checked (415), size bounded (413) before parsing."""

from __future__ import annotations

from fastapi import Request

from clientregistry.fhir.errors import payload_too_large, unsupported_media_type

MEDIA_TYPES = ("application/fhir+json", "application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a FHIR JSON request, refused early when too large or of another type."""
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise unsupported_media_type(content_type, MEDIA_TYPES)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(int(declared), limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise payload_too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)
