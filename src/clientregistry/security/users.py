"""People who log in: accounts, roles and passwords (argon2id, never a default password).

Roles (:class:`~clientregistry.store.enums.Role`):

* ``admin`` — everything: users, configuration, review and the audit trail;
* ``reviewer`` — the review queues, links (break, join, resolve), dry-run matching;
* ``auditor`` — reads the audit trail, nothing else.

The functions here change the database in the caller's session and transaction; the callers
(``clientregistry users …`` and the admin API) audit what they did. Changing a password or
disabling an account revokes the account's tokens; a role change takes effect at the next
request, because every request reads the account again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clientregistry.errors import ClientRegistryError
from clientregistry.security.passwords import hash_password
from clientregistry.store.enums import Role
from clientregistry.store.models import Token, User

MIN_PASSWORD_LENGTH = 12
"""A chosen password has at least this many characters (generated ones have 20)."""
MAX_PASSWORD_LENGTH = 1024
"""Longer inputs are refused before hashing (argon2 would take them, but nobody types that)."""
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
"""Letters, digits and ``. _ @ -``; 1–128 characters, not starting with punctuation."""

ROLE_RANK = {Role.AUDITOR: 0, Role.REVIEWER: 1, Role.ADMIN: 2}


class UserError(ClientRegistryError):
    """A user-management request that cannot be done; ``message`` says why."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UserExists(UserError):
    """``add`` of a username that is taken."""


class UnknownUser(UserError):
    """No account has that username."""


class BadPassword(UserError):
    """A password that breaks the policy (too short, blank, too long)."""


class LastAdmin(UserError):
    """The change would leave no enabled admin account."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def check_username(username: str) -> str:
    """``username`` if it is acceptable; :class:`UserError` otherwise."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise UserError(
            f"invalid username {username!r}: use 1-128 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    """``password`` if the policy allows it; :class:`BadPassword` otherwise."""
    if not password.strip():
        raise BadPassword("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadPassword(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadPassword(f"the password has more than {MAX_PASSWORD_LENGTH} characters")
    return password


def parse_role(role: str | Role) -> Role:
    """The :class:`Role` named ``role``; :class:`UserError` for an unknown one."""
    try:
        return Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise UserError(f"unknown role {role!r}; choose one of {known}") from None


def has_role(user: User, allowed: Iterable[Role]) -> bool:
    """Whether ``user`` holds one of ``allowed`` (admin holds every role)."""
    return user.role is Role.ADMIN or user.role in set(allowed)


def get_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise UnknownUser(f"no user named {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def add_user(
    session: Session, username: str, password: str, role: str | Role, *, now: datetime | None = None
) -> User:
    """Create an account; :class:`UserExists` when the name is taken."""
    check_username(username)
    chosen = parse_role(role)
    check_password(password)
    if get_user(session, username) is not None:
        raise UserExists(f"a user named {username!r} already exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=chosen,
        disabled=False,
        created_at=now or now_utc(),
    )
    session.add(user)
    session.flush()
    return user


def revoke_tokens(session: Session, user_id: int) -> int:
    """Revoke every token of one account; how many were still valid."""
    result = session.execute(
        update(Token).where(Token.user_id == user_id, Token.revoked.is_(False)).values(revoked=True)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def set_password(session: Session, username: str, password: str) -> User:
    """Give an account a new password and end its sessions."""
    user = require_user(session, username)
    check_password(password)
    user.password_hash = hash_password(password)
    revoke_tokens(session, user.id)
    session.flush()
    return user


def set_role(session: Session, username: str, role: str | Role) -> User:
    """Change an account's role; the last enabled admin keeps theirs."""
    user = require_user(session, username)
    chosen = parse_role(role)
    if chosen is not Role.ADMIN:
        _keep_an_admin(session, user)
    user.role = chosen
    session.flush()
    return user


def set_disabled(session: Session, username: str, disabled: bool = True) -> User:
    """Disable (and log out) or enable an account; the last enabled admin stays enabled."""
    user = require_user(session, username)
    if disabled:
        _keep_an_admin(session, user)
    user.disabled = disabled
    if disabled:
        revoke_tokens(session, user.id)
    session.flush()
    return user


def _keep_an_admin(session: Session, user: User) -> None:
    """Refuse to take away the last enabled admin account (nobody could manage users)."""
    if user.role is not Role.ADMIN or user.disabled:
        return
    others = session.scalars(
        select(User.id).where(User.role == Role.ADMIN, User.disabled.is_(False), User.id != user.id)
    ).first()
    if others is None:
        raise LastAdmin(f"{user.username!r} is the last enabled admin; add another admin first")
