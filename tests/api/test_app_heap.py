"""A server process hides its startup heap from the garbage collector (``freeze_heap``):
full collections would otherwise walk the matcher and term counts and stall the worker."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI

from clientregistry.api import app as app_module
from clientregistry.api.app import _warn_on_long_collections, create_app
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.settings import load_settings


def _context(tmp_path: Path) -> RegistryContext:
    init_data_dir(tmp_path / "data", hostnames=[])
    return RegistryContext.open(load_settings(tmp_path / "data", environ={}))


def _freeze_count_while_running(app: FastAPI) -> int:
    async def run() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    return asyncio.run(run())


def test_a_server_process_freezes_what_is_alive_at_startup(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    try:
        frozen = _freeze_count_while_running(create_app(_context(tmp_path), freeze_heap=True))
        assert frozen > 10_000  # modules, matcher, term counts, ...
    finally:
        gc.unfreeze()


def test_an_application_in_a_test_freezes_nothing(tmp_path: Path) -> None:
    assert _freeze_count_while_running(create_app(_context(tmp_path))) == 0


def test_a_long_collection_in_a_server_process_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(_context(tmp_path), freeze_heap=True)
    monkeypatch.setattr(app_module, "SLOW_COLLECTION", 0.0)  # every collection is "long"

    async def run() -> None:
        async with app.router.lifespan_context(app):
            with caplog.at_level(logging.WARNING, logger="clientregistry.api.app"):
                gc.collect()

    try:
        asyncio.run(run())
    finally:
        gc.unfreeze()
    assert any(
        "garbage collection" in r.getMessage() and "of it collecting" in r.getMessage()
        for r in caplog.records
    )
    assert _warn_on_long_collections not in gc.callbacks  # removed when the app stops
