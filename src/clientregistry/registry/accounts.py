"""Managing the people who log in, as a use case: list, add, change role, disable or enable,
reset a password (admins), and a person's own password and language.

:mod:`clientregistry.security.users` holds the rules (password policy, the last admin); this
module runs them in transactions and audits each change (``user-add``, ``user-change``,
``password-change``, ``language-change``), so that the admin API, the web UI and the command
line agree. Refusals come out as :class:`~clientregistry.registry.actor.Refused` with a code
a user interface can translate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from pydantic import BaseModel, Field

from clientregistry.registry.actor import Actor, Reading, Refused, audit_in, audit_read
from clientregistry.registry.context import RegistryContext
from clientregistry.security import users
from clientregistry.security.passwords import verify_password
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, Role
from clientregistry.store.models import User

LANGUAGES = ("en", "fr")
"""The languages a person may choose for the web UI."""


class UserItem(BaseModel):
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    language: str | None = Field(default=None, description="Chosen web UI language")


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=1, max_length=users.MAX_PASSWORD_LENGTH)


def user_item(user: User) -> UserItem:
    return UserItem(
        username=user.username,
        role=user.role,
        disabled=user.disabled,
        created_at=user.created_at,
        language=user.language,
    )


@contextmanager
def _refusals() -> Iterator[None]:
    """Account errors as :class:`Refused` (404 unknown, 409 taken, 400 otherwise)."""
    try:
        yield
    except users.UnknownUser as error:
        raise Refused(404, error.message, code="unknown-user") from None
    except users.UserExists as error:
        raise Refused(409, error.message, code="user-exists") from None
    except users.BadPassword as error:
        raise Refused(400, error.message, code="bad-password") from None
    except users.LastAdmin as error:
        raise Refused(400, error.message, code="last-admin") from None
    except users.UserError as error:
        raise Refused(400, error.message, code="bad-account") from None


def list_accounts(context: RegistryContext, actor: Actor) -> list[UserItem]:
    """Every account, by username."""
    with transaction(context.sessions, write=False) as session:
        items = [user_item(u) for u in users.list_users(session)]
    audit_read(context, actor, Reading("user-read"))
    return items


def add_account(
    context: RegistryContext, actor: Actor, username: str, password: str, role: Role
) -> UserItem:
    """Add an account (the password must have at least 12 characters)."""
    with _refusals(), transaction(context.sessions) as session:
        created = users.add_user(session, username, password, role)
        item = user_item(created)
        detail = {"username": created.username, "role": created.role.value}
        audit_in(session, actor, Reading("user-add", detail=detail, action=AuditAction.CREATE))
    return item


def change_account(
    context: RegistryContext, actor: Actor, username: str, change: UserChange
) -> UserItem:
    """Change an account's role, disable or enable it, or set its password (which logs it
    out). The last enabled admin can be neither demoted nor disabled."""
    with _refusals(), transaction(context.sessions) as session:
        target = users.require_user(session, username)
        before = {"role": target.role.value, "disabled": target.disabled}
        if change.password is not None:
            users.set_password(session, username, change.password)
        if change.role is not None:
            users.set_role(session, username, change.role)
        if change.disabled is not None:
            users.set_disabled(session, username, change.disabled)
        after = {"role": target.role.value, "disabled": target.disabled}
        detail = {
            "username": username,
            "before": before,
            "after": after,
            "password_changed": change.password is not None,
        }
        audit_in(session, actor, Reading("user-change", detail=detail, action=AuditAction.UPDATE))
        item = user_item(target)
    return item


def change_own_password(context: RegistryContext, actor: Actor, current: str, new: str) -> UserItem:
    """A person changes their own password, giving the current one; every session of theirs
    ends (they log in again)."""
    with transaction(context.sessions, write=False) as session:
        found = users.get_user(session, actor.username)
        stored = found.password_hash if found is not None else None
    if stored is None or not verify_password(stored, current):
        with transaction(context.sessions) as session:
            reading = Reading("password-change", detail={"reason": "wrong current password"})
            audit_in(session, actor, reading, outcome=4)
        raise Refused(400, "the current password is wrong", code="wrong-password")
    with _refusals(), transaction(context.sessions) as session:
        user = users.set_password(session, actor.username, new)
        reading = Reading("password-change", action=AuditAction.UPDATE)
        audit_in(session, actor, reading)
        item = user_item(user)
    return item


def set_language(context: RegistryContext, actor: Actor, language: str | None) -> UserItem:
    """The web UI's language for this person (None: follow the browser)."""
    if language is not None and language not in LANGUAGES:
        raise Refused(
            400,
            f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}",
            code="unknown-language",
        )
    with _refusals(), transaction(context.sessions) as session:
        user = users.require_user(session, actor.username)
        before = user.language
        user.language = language
        detail = {"before": before, "after": language}
        audit_in(
            session, actor, Reading("language-change", detail=detail, action=AuditAction.UPDATE)
        )
        item = user_item(user)
    return item
