"""The fixture of the lookup tests (``test_lookup``, ``test_pix``, ``test_person_match``,
``test_search``): ``registry``, the people of :mod:`lookup_registry`, filled once per test
module on each backend. (``test_links`` has a ``registry`` of its own.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from lookup_registry import Registry, fill

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.settings import load_settings


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[Registry]:
    with fresh_database(request.param) as url:
        data_dir: Path = tmp_path_factory.mktemp("lookup") / "data"
        init_data_dir(data_dir, hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        try:
            yield fill(Registry(context, {}))
        finally:
            context.close()
