"""The fixture of the lookup tests (``test_lookup``, ``test_pix``, ``test_person_match``,
``test_search``): ``registry``, the people of :mod:`lookup_registry`, filled once per test
module on each backend. (``test_links`` has a ``registry`` of its own.) And ``desk``: an
empty registry per test on each backend, with two reviewers (:mod:`desk`), for the use cases
people call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from desk import PASSWORD
from lookup_registry import Registry, fill
from test_links import Registry as LinkRegistry

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.security import passwords, users
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import Role


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


@pytest.fixture(params=["sqlite", "postgresql"])
def desk(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[LinkRegistry]:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    with fresh_database(request.param) as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(tmp_path / "data", environ={}))
        with transaction(context.sessions) as session:
            users.add_user(session, "rita", PASSWORD, Role.REVIEWER)
            users.add_user(session, "dave", PASSWORD, Role.REVIEWER)
        yield LinkRegistry(context)
        context.close()
