"""FHIR Bulk Data export (the HL7 Bulk Data Access IG's asynchronous pattern) of the
registry's Patients, for client systems allowed to read demographics.

* ``GET /fhir/Patient/$export`` with ``Prefer: respond-async`` (and ``Accept:
  application/fhir+json``) starts an export and answers 202 with ``Content-Location``: the
  status URL. Parameters: ``_outputFormat`` (``application/fhir+ndjson``, the only format),
  ``_since`` (an instant: only records changed at or after it), ``_type`` (``Patient``, the
  only type).
* ``GET /fhir/$export-status/{id}``: 202 with ``X-Progress`` while it runs; 200 with the
  manifest when done (``transactionTime``, ``request``, ``requiresAccessToken`` - the same
  client certificate is needed -, ``output``: one entry per NDJSON file, ``error``), with an
  ``Expires`` header; ``DELETE`` cancels it and deletes its files (202).
* ``GET /fhir/$export-file/{id}/{name}``: one NDJSON file (source records as they are
  served, then golden records with their links: :mod:`clientregistry.registry.export`).

Only the system that asked sees an export's status and files. The server's job runner writes
the files (kept :data:`~clientregistry.registry.export.KEEP`); every request is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from clientregistry.api.audit import audit_read, client_address
from clientregistry.api.deps import Context, require
from clientregistry.api.params import RowId
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.errors import FhirError, bad_request
from clientregistry.registry import export
from clientregistry.registry.jobs import JobError
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.enums import JobState
from clientregistry.store.models import BulkJob

router = APIRouter(prefix="/fhir")

Reader = Annotated[ClientSystemConfig, Depends(require("read-demographics"))]

NDJSON = "application/fhir+ndjson"
FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
KNOWN = {"_outputFormat", "_since", "_type"}


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f"_since {value[:40]!r} is not a FHIR instant (e.g. 2026-01-31T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise bad_request("_since needs a time zone (e.g. ...Z)")
    return moment.astimezone(UTC)


def _check_kickoff(request: Request) -> datetime | None:
    prefer = request.headers.get("prefer", "")
    if "respond-async" not in prefer.lower():
        raise bad_request("A bulk export is asynchronous: send Prefer: respond-async")
    accept = request.headers.get("accept")
    if accept and not any(
        media in accept.lower() for media in ("application/fhir+json", "*/*", "application/*")
    ):
        raise bad_request("Accept application/fhir+json (the status and errors' format)")
    params = request.query_params
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise bad_request(f"not supported: {', '.join(unknown)} (only {', '.join(sorted(KNOWN))})")
    for name in KNOWN:
        if len(params.getlist(name)) > 1:
            raise bad_request(f"{name} given more than once")
    output_format = params.get("_outputFormat")
    if output_format is not None and output_format not in FORMATS:
        raise bad_request(f"_outputFormat {output_format[:60]!r}: only {NDJSON}")
    types = params.get("_type")
    if types is not None:
        other = sorted({t.strip() for t in types.split(",")} - {"Patient"})
        if other:
            raise bad_request(f"_type: this registry exports Patients only, not {', '.join(other)}")
    return _since(params.get("_since"))


@router.get("/Patient/$export", status_code=202)
def kickoff(request: Request, context: Context, system: Reader) -> Response:
    """Start an export of the registry's Patients (source and golden records)."""
    since = _check_kickoff(request)
    job_id = export.start_export(
        context,
        system.name,
        since=since,
        request_url=str(request.url),
        source_address=client_address(request),
    )
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="export",
        entity=None,
        detail={"job": job_id, "since": None if since is None else since.isoformat()},
    )
    status_url = str(request.base_url).rstrip("/") + f"/fhir/$export-status/{job_id}"
    return Response(status_code=202, headers={"Content-Location": status_url})


def _job(context: Context, job_id: int, system: ClientSystemConfig) -> BulkJob:
    try:
        job = export.export_job(context, job_id, system.name)
    except JobError:
        raise FhirError(404, "not-found", f"no export {job_id}") from None
    if (job.progress or {}).get("deleted"):
        raise FhirError(404, "not-found", f"export {job_id} was deleted")
    return job


@router.get("/$export-status/{job_id}")
def status(job_id: RowId, request: Request, context: Context, system: Reader) -> Response:
    """Where an export stands: 202 while it runs, 200 with the manifest when done."""
    job = _job(context, job_id, system)
    progress = job.progress or {}
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        done = int(progress.get("records", 0))
        return Response(
            status_code=202,
            headers={"X-Progress": f"{done} records written", "Retry-After": "2"},
        )
    if job.state is not JobState.DONE:
        reason = job.error or f"the export was {job.state.value}"
        raise FhirError(500, "exception", reason)
    manifest = export.Manifest.from_json(progress["manifest"])
    base = str(request.base_url).rstrip("/") + f"/fhir/$export-file/{job_id}/"
    body = {
        "transactionTime": manifest.to_json()["transactionTime"],
        "request": job.params.get("request"),
        "requiresAccessToken": True,
        "output": [
            {"type": f.type, "url": base + f.name, "count": f.count} for f in manifest.output
        ],
        "error": [],
    }
    expires = (job.finished_at or job.updated_at) + export.KEEP
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="export-status",
        entity=None,
        detail={"job": job_id},
    )
    return fhir_response(body, 200, {"Expires": format_datetime(expires, usegmt=True)})


@router.delete("/$export-status/{job_id}", status_code=202)
async def delete(job_id: RowId, request: Request, context: Context, system: Reader) -> Response:
    """Cancel an export and delete its files."""
    await run_in_threadpool(_job, context, job_id, system)
    await run_in_threadpool(export.delete_export, context, job_id, system.name)
    await run_in_threadpool(
        lambda: audit_read(
            context,
            request,
            agent=system.name,
            interaction="export-delete",
            entity=None,
            detail={"job": job_id},
        )
    )
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{name}")
def download(
    job_id: RowId, name: str, request: Request, context: Context, system: Reader
) -> Response:
    """One NDJSON file of a finished export."""
    job = _job(context, job_id, system)
    manifest = (job.progress or {}).get("manifest") or {}
    names = {item["name"] for item in manifest.get("output", [])}
    path = export.exports_dir(context, job_id) / name
    if job.state is not JobState.DONE or name not in names or not path.is_file():
        raise FhirError(404, "not-found", f"no file {name[:80]!r} in export {job_id}")
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="export-file",
        entity=None,
        detail={"job": job_id, "file": name},
    )
    return FileResponse(path, media_type=NDJSON)
