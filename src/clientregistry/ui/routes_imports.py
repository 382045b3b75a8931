"""Bulk uploads (admins): a CSV, NDJSON or Bundle file of Patients with a column mapping,
submitted as a chosen client system; its progress; its report, on the page and as CSV or
XLSX.

The pages call the import job use case the command line's ``import`` and the admin API's
``POST /admin/imports`` call (:mod:`clientregistry.registry.imports`): the file is kept in
the data directory and the server's job runner imports it. While it runs, its page shows a
progress bar that a small script (``app.js``) moves on by polling ``…/progress`` (JSON);
without the script, the page reloads itself every few seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from clientregistry.registry import import_report, imports, jobs
from clientregistry.registry.imports import ImportOptions, ImportStatus, OnError
from clientregistry.store.enums import JobOrigin
from clientregistry.ui.pages import Admin, FormFields, Page, upload_form

router = APIRouter(prefix="/ui/imports")
PAGE_SIZE = 50
MAPPED = ("id", "given", "family", "gender", "birth_date", "phone")
"""The Patient elements a CSV column can feed (``dedupe --column element=column``)."""
IDENTIFIER_ROWS = 2
"""Identifier columns the form offers (system and column each)."""
REFRESH_SECONDS = 3


def _statuses(page: Page) -> list[ImportStatus]:
    _, items = imports.list_imports(page.context, 0, 50)
    page.audit("import-read")
    return items


def _form_page(page: Page, status: int = 200, error: str | None = None, **form: Any) -> Response:
    defaults = imports.ImportOptions().mapping()
    return page.render(
        "imports.html",
        status=status,
        items=_statuses(page),
        systems=sorted(page.context.settings.systems),
        mapped=MAPPED,
        defaults={name: getattr(defaults, name) for name in MAPPED},
        identifier_rows=range(1, IDENTIFIER_ROWS + 1),
        error=error,
        form=form,
    )


@router.get("")
def imports_page(page: Admin) -> Response:
    return _form_page(page)


def _columns(page: Page, form: dict[str, str]) -> tuple[str, ...]:
    """The form's mapping as ``element=column`` overrides (blank fields keep the default);
    a :class:`ValueError` for an identifier system without its column, or the reverse."""
    pairs = [f"{name}={form[f'col_{name}']}" for name in MAPPED if form.get(f"col_{name}")]
    for n in range(1, IDENTIFIER_ROWS + 1):
        system, column = form.get(f"id_system_{n}", ""), form.get(f"id_column_{n}", "")
        if bool(system) != bool(column):
            raise ValueError(page._("Give each identifier system with its column."))
        if system:
            pairs.append(f"identifier:{system}={column}")
    return tuple(pairs)


def _keep(page: Page, upload: UploadFile) -> tuple[Path, str]:
    """The uploaded file, moved where the job runner reads it, and its name."""
    name = Path(upload.filename or "").name[:200] or "upload.ndjson"
    directory = imports.stored_upload_path(page.context, "").parent
    handle, temporary = tempfile.mkstemp(prefix=".upload-", dir=directory)
    path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
        if path.stat().st_size == 0:
            raise ValueError(page._("The file is empty."))
        return imports.keep_upload(page.context, path, name), name
    finally:
        path.unlink(missing_ok=True)


def _start(page: Page, fields: dict[str, str], upload: UploadFile | None) -> Response:
    page.check_csrf(fields.get("csrf_token"))
    system = fields.get("system") or None
    on_error = OnError.STOP if fields.get("on_error") == OnError.STOP else OnError.SKIP
    if upload is None or not upload.filename:
        return _form_page(page, 400, page._("Choose a file to upload."), **fields)
    actor = page.actor
    try:
        options = ImportOptions(system=system, columns=_columns(page, fields), on_error=on_error)
        imports.check_options(page.context, options)
        kept, name = _keep(page, upload)
        started = imports.start_import(
            page.context,
            kept,
            options,
            origin=JobOrigin.SERVER,
            actor=actor.username,
            name=name,
            source_address=actor.source_address,
        )
    except ValueError as error:
        return _form_page(page, 400, str(error), **fields)
    except jobs.JobError as error:
        message = page._("The registry refused this: %(detail)s", detail=error.message)
        return _form_page(page, error.status, message, **fields)
    done = "already" if started.already_done else ("resumed" if started.resumed else "started")
    return page.redirect(f"/ui/imports/{started.job_id}", done=done)


@router.post("")
async def upload(request: Request, page: Admin) -> Response:
    fields, file = await upload_form(page, request, imports.MAX_UPLOAD_BYTES)
    try:
        return await run_in_threadpool(_start, page, fields, file)
    finally:
        if file is not None:
            await file.close()


def _status(page: Page, raw: str) -> ImportStatus:
    number = page.number(raw)
    return page.call(lambda: imports.import_status(page.context, number))


def _progress_text(page: Page, status: ImportStatus) -> str:
    counts = status.counts
    if status.total:
        return page._(
            "%(done)s of about %(total)s rows",
            done=page.texts.number(counts.rows),
            total=page.texts.number(status.total),
        )
    return page._("%(done)s rows", done=page.texts.number(counts.rows))


@router.get("/{job_id}")
def import_page(job_id: str, page: Admin, offset: str | None = None) -> Response:
    status = _status(page, job_id)
    start = int(offset) if offset and offset.isdigit() and len(offset) < 12 else 0
    report = page.call(lambda: import_report.report_page(page.context, status.id, start, PAGE_SIZE))
    page.audit("import-read", job=status.id)
    running = status.state in jobs.UNFINISHED
    return page.render(
        "import.html",
        job=report.status,
        report=report,
        running=running,
        refresh=REFRESH_SECONDS if running else None,
        progress_text=_progress_text(page, report.status),
        done=page.request.query_params.get("done"),
        columns=import_report.COLUMNS,
        base=f"/ui/imports/{status.id}?",
    )


@router.get("/{job_id}/progress")
def progress(job_id: str, page: Admin) -> Response:
    """The import's progress as JSON, for the progress bar's script."""
    status = _status(page, job_id)
    body = {
        "state": status.state.value,
        "done": status.counts.rows,
        "total": status.total,
        "text": _progress_text(page, status),
        "finished": status.state not in jobs.UNFINISHED,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/{job_id}/cancel")
def cancel(job_id: str, page: Admin, form: FormFields) -> Response:
    page.check_csrf(form.get("csrf_token"))
    number = page.number(job_id)
    actor = page.actor
    page.call(
        lambda: imports.cancel_import(page.context, number, actor.username, actor.source_address)
    )
    return page.redirect(f"/ui/imports/{number}", done="cancelled")


def _stem(status: ImportStatus) -> str:
    return Path(status.file_name).stem or "import"


@router.get("/{job_id}/report.csv")
def report_csv(job_id: str, page: Admin) -> Response:
    status = _status(page, job_id)
    page.audit("import-report", job=status.id)
    return StreamingResponse(
        import_report.csv_report(page.context, status.id),
        media_type=f"{import_report.CSV_MEDIA_TYPE}; charset=utf-8",
        headers={
            "Content-Disposition": (
                f'attachment; filename="{_stem(status)}-report-{status.id}.csv"'
            ),
            "Cache-Control": "no-store",
        },
    )


@router.get("/{job_id}/report.xlsx")
def report_xlsx(job_id: str, page: Admin) -> Response:
    status = _status(page, job_id)
    page.audit("import-report", job=status.id)
    path = import_report.xlsx_report(page.context, status.id)
    return FileResponse(
        path,
        media_type=import_report.XLSX_MEDIA_TYPE,
        filename=f"{_stem(status)}-report-{status.id}.xlsx",
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(path.unlink, missing_ok=True),
    )
