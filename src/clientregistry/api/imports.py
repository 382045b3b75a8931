"""The admin API's imports (``/admin/imports``): upload a file of Patients, follow the job,
download its report, cancel it.

======================================  ======  ===========================================
route                                   role    what
======================================  ======  ===========================================
POST   /admin/imports                   admin   upload (the body is the file); 202 at once
GET    /admin/imports                   admin   imports, newest first (paged)
GET    /admin/imports/{id}              admin   state, counts, progress
GET    /admin/imports/{id}/rows         admin   the report's lines, a page of them (JSON)
GET    /admin/imports/{id}/report       admin   CSV, or XLSX (by ``Accept``)
POST   /admin/imports/{id}/cancel       admin   stop it after its current batch
======================================  ======  ===========================================

The upload's body is the file itself (``curl --data-binary @patients.ndjson``): FHIR NDJSON
(``application/fhir+ndjson``, ``application/x-ndjson``), a Bundle (``application/fhir+json``)
or CSV (``text/csv``); ``name`` (the file's name) decides when given. Query parameters:
``system`` (the client system the records come from), ``column`` (repeatable, CSV mapping
``element=column``), ``on_error`` (``skip`` or ``stop``). The file is kept in the data
directory and the server's job runner imports it (:mod:`clientregistry.registry.job_runner`),
also after a restart. Uploading the same file with the same options again finds the import
already made (200) or continues the unfinished one. Every call is audited.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from clientregistry.api.auth import AdminUser, ApiError, client_address
from clientregistry.api.deps import Context
from clientregistry.api.params import Offset, RowId
from clientregistry.registry import import_report, imports, jobs, links
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.import_rows import FileFormat
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, JobOrigin
from clientregistry.store.models import User

router = APIRouter(prefix="/admin/imports", tags=["imports"])

MAX_UPLOAD_BYTES = imports.MAX_UPLOAD_BYTES

_MEDIA = {
    "text/csv": FileFormat.CSV,
    "application/csv": FileFormat.CSV,
    "application/fhir+ndjson": FileFormat.NDJSON,
    "application/x-ndjson": FileFormat.NDJSON,
    "application/ndjson": FileFormat.NDJSON,
    "application/jsonl": FileFormat.NDJSON,
    "application/fhir+json": FileFormat.BUNDLE,
    "application/json": FileFormat.BUNDLE,
}
_SUFFIX = {FileFormat.CSV: ".csv", FileFormat.NDJSON: ".ndjson", FileFormat.BUNDLE: ".json"}


class ImportModel(BaseModel):
    """An import job."""

    id: int
    state: str
    origin: str
    file_name: str
    file_format: str
    system: str | None
    created_by: str
    created_at: Any
    updated_at: Any
    finished_at: Any
    total: int | None
    progress: float | None
    counts: imports.ImportCounts
    on_error: str
    cancel_requested: bool
    error: str | None
    already_done: bool = False
    resumed: bool = False


class ReportLine(BaseModel):
    """One input row's line of an import's report (the CSV report's columns)."""

    row: int
    line: int | None
    entry: int | None
    patient_id: str | None
    source_id: str | None
    record_id: str | None
    CRUID: str | None
    outcome: str
    action: str | None
    score: float | None
    rule_set: str | None
    potential_matches: int | None
    conflicts: int | None
    error: str | None


class ReportRows(BaseModel):
    """A page of an import's report, and how many rows had each outcome so far."""

    total: int
    offset: int
    limit: int
    by_outcome: dict[str, int]
    items: list[ReportLine]


class ImportPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ImportModel]


def _model(
    status: imports.ImportStatus, *, already_done: bool = False, resumed: bool = False
) -> ImportModel:
    return ImportModel.model_validate(
        {**status.to_json(), "already_done": already_done, "resumed": resumed}
    )


def _audit(
    context: RegistryContext,
    request: Request,
    user: User,
    event: str,
    job_id: int | None,
    action: AuditAction = AuditAction.READ,
) -> None:
    with transaction(context.sessions) as session:
        links.record_action(
            session,
            agent=user.username,
            source_address=client_address(request),
            event_type=event,
            action=action,
            entity=None if job_id is None else f"BulkJob/{job_id}",
            detail={} if job_id is None else {"job": job_id},
        )


def _file_name(request: Request, name: str | None) -> str:
    if name:
        base = Path(name).name
        if not base or len(base) > 200:
            raise ApiError(400, "name must be a file name (at most 200 characters)")
        return base
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    kind = _MEDIA.get(media)
    if kind is None:
        known = ", ".join(sorted(_MEDIA))
        raise ApiError(415, f"send the file as one of {known}, or name it (?name=patients.ndjson)")
    return f"upload{_SUFFIX[kind]}"


async def _receive(request: Request, directory: Path) -> Path:
    """The request's body, written to a file in ``directory`` (413 past the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".upload-", dir=directory)
    path = Path(name)
    size = 0
    try:
        with os.fdopen(handle, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise ApiError(413, f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(400, "the file is empty")
    return path


@router.post("", status_code=202, response_model=ImportModel)
async def upload(
    request: Request,
    context: Context,
    user: AdminUser,
    system: Annotated[str | None, Query(max_length=128)] = None,
    column: Annotated[list[str] | None, Query(max_length=50)] = None,
    on_error: Annotated[str, Query(max_length=16)] = "skip",
    name: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """Upload a file to import: the job's id comes back at once (202), the server's job
    runner imports it (200 and ``already_done`` when this file was imported already with
    the same options)."""
    file_name = _file_name(request, name)
    options = imports.ImportOptions(system=system, columns=tuple(column or ()), on_error=on_error)
    try:
        imports.check_options(context, options)
    except jobs.JobError as error:
        raise ApiError(error.status, error.message) from None
    uploads = imports.stored_upload_path(context, "").parent
    received = await _receive(request, uploads)
    try:
        kept = await run_in_threadpool(imports.keep_upload, context, received, file_name)
        started = await run_in_threadpool(
            lambda: imports.start_import(
                context,
                kept,
                options,
                origin=JobOrigin.SERVER,
                actor=user.username,
                name=file_name,
                source_address=client_address(request),
            )
        )
    except jobs.JobError as error:
        raise ApiError(error.status, error.message) from None
    finally:
        received.unlink(missing_ok=True)
    status = await run_in_threadpool(imports.import_status, context, started.job_id)
    body = _model(status, already_done=started.already_done, resumed=started.resumed)
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=200 if started.already_done else 202,
        headers={"Location": f"/admin/imports/{started.job_id}"},
    )


@router.get("", response_model=ImportPage)
def list_imports(
    request: Request,
    context: Context,
    user: AdminUser,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ImportPage:
    """Imports, newest first."""
    total, items = imports.list_imports(context, offset, limit)
    _audit(context, request, user, "import-read", None)
    return ImportPage(
        total=total, offset=offset, limit=limit, items=[_model(item) for item in items]
    )


def _status(context: RegistryContext, job_id: int) -> imports.ImportStatus:
    try:
        return imports.import_status(context, job_id)
    except jobs.JobError as error:
        raise ApiError(error.status, error.message) from None


@router.get("/{job_id}", response_model=ImportModel)
def get_import(job_id: RowId, request: Request, context: Context, user: AdminUser) -> ImportModel:
    """An import's state, counts and progress."""
    status = _status(context, job_id)
    _audit(context, request, user, "import-read", job_id)
    return _model(status)


@router.post("/{job_id}/cancel", response_model=ImportModel)
def cancel(job_id: RowId, request: Request, context: Context, user: AdminUser) -> ImportModel:
    """Cancel an import: at once if it waits, else after its current batch (what it stored
    stays)."""
    try:
        status = imports.cancel_import(context, job_id, user.username, client_address(request))
    except jobs.JobError as error:
        raise ApiError(error.status, error.message) from None
    return _model(status)


@router.get("/{job_id}/rows", response_model=ReportRows)
def report_rows(
    job_id: int,
    request: Request,
    context: Context,
    user: AdminUser,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReportRows:
    """The import's report so far, a page of lines in input order (as JSON; the whole of it
    is ``/report``)."""
    try:
        page = import_report.report_page(context, job_id, offset, limit)
    except jobs.JobError as error:
        raise ApiError(error.status, error.message) from None
    _audit(context, request, user, "import-report", job_id)
    return ReportRows(
        total=page.total,
        offset=offset,
        limit=limit,
        by_outcome=page.by_outcome,
        items=[ReportLine.model_validate(line) for line in page.lines],
    )


def _wants_xlsx(request: Request) -> bool:
    accept = (request.headers.get("accept") or "").lower()
    wanted = [part.split(";")[0].strip() for part in accept.split(",")]
    if import_report.XLSX_MEDIA_TYPE in wanted:
        return True
    if not accept or import_report.CSV_MEDIA_TYPE in wanted or "*/*" in wanted:
        return False
    if "text/*" in wanted:
        return False
    raise ApiError(
        406,
        f"the report is {import_report.CSV_MEDIA_TYPE} or {import_report.XLSX_MEDIA_TYPE}",
    )


@router.get(
    "/{job_id}/report",
    responses={
        200: {
            "content": {
                import_report.CSV_MEDIA_TYPE: {},
                import_report.XLSX_MEDIA_TYPE: {},
            },
            "description": "One line per input row: CSV, or XLSX with a summary and a chart",
        }
    },
)
def report(job_id: RowId, request: Request, context: Context, user: AdminUser) -> Response:
    """The import's report, so far: CSV (``Accept: text/csv``, the default) or XLSX
    (``Accept: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet``)."""
    xlsx = _wants_xlsx(request)
    status = _status(context, job_id)
    _audit(context, request, user, "import-report", job_id)
    stem = Path(status.file_name).stem or "import"
    if xlsx:
        path = import_report.xlsx_report(context, job_id)
        return FileResponse(
            path,
            media_type=import_report.XLSX_MEDIA_TYPE,
            filename=f"{stem}-report-{job_id}.xlsx",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )
    return StreamingResponse(
        import_report.csv_report(context, job_id),
        media_type=f"{import_report.CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stem}-report-{job_id}.csv"'},
    )
