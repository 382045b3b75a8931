"""What the admin routes share: the person behind a request as an
:class:`~clientregistry.registry.actor.Actor`, and a use case's refusal as an API error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

from clientregistry.api.auth import ApiError, client_address
from clientregistry.registry.actor import Actor, Refused
from clientregistry.store.models import User

_T = TypeVar("_T")


def actor(request: Request, user: User) -> Actor:
    """The person behind a request, for the use cases."""
    return Actor(user.username, user.role, client_address(request))


def call(use_case: Callable[[], _T]) -> _T:
    """Run a use case; its :class:`Refused` becomes an :class:`ApiError` (same status and
    message)."""
    try:
        return use_case()
    except Refused as error:
        raise ApiError(error.status, error.message) from None
