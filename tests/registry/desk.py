"""Who acts in the tests of the use cases people call (``test_reviewing``,
``test_people_finder``, ``test_person_view``, ``test_statistics``, ``test_rules_view``), on
the ``desk`` fixture of ``conftest.py`` (accounts ``rita`` and ``dave``, reviewers)."""

from __future__ import annotations

from clientregistry.registry.actor import Actor
from clientregistry.store.enums import Role

RITA = Actor("rita", Role.REVIEWER, "127.0.0.9")
DAVE = Actor("dave", Role.REVIEWER, "127.0.0.10")
PASSWORD = "reviewer password 1"
