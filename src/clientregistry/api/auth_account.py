"""A person's own account (``/auth/me``): change one's password, choose one's language.

* ``POST /auth/me/password`` — ``current_password`` and ``new_password``; every session of
  the account ends, this one included (log in again). 400 for a wrong current password or a
  new one the policy refuses.
* ``PATCH /auth/me`` — ``language`` (``en``, ``fr`` or null: the browser's) for the web UI.

Any role may call them, with a bearer token (:data:`~clientregistry.api.auth.CurrentUser`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from clientregistry.api.acting import actor, call
from clientregistry.api.auth import CurrentUser
from clientregistry.api.deps import Context
from clientregistry.registry import accounts
from clientregistry.registry.accounts import UserItem
from clientregistry.security.users import MAX_PASSWORD_LENGTH

router = APIRouter(prefix="/auth", tags=["auth"])


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class Preferences(BaseModel):
    language: str | None = Field(description="en, fr, or null for the browser's language")


@router.post("/me/password", status_code=204, response_class=Response)
def change_password(
    body: PasswordChange, request: Request, context: Context, user: CurrentUser
) -> Response:
    """Change one's own password; every session of the account ends."""
    who = actor(request, user)
    call(
        lambda: accounts.change_own_password(context, who, body.current_password, body.new_password)
    )
    return Response(status_code=204)


@router.patch("/me", response_model=UserItem)
def change_preferences(
    body: Preferences, request: Request, context: Context, user: CurrentUser
) -> UserItem:
    """Choose the web UI's language."""
    return call(lambda: accounts.set_language(context, actor(request, user), body.language))
