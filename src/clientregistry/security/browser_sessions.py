"""Browser sessions: the web UI's logins, kept as tokens of :mod:`.tokens` that also expire
when idle.

A browser session is an ordinary token (what ``POST /auth/token`` issues: random, stored
hashed, revocable, ended by a password change or a disabled account) whose
``last_seen_at`` is set. It is valid while the token is, and while its last request is less
than ``idle`` ago; each request moves ``last_seen_at`` on, at most once a
:data:`TOUCH_EVERY` (a write a minute per active person, not one per page). A token without
``last_seen_at`` (an API token) is not a browser session. An idle session is revoked when it
is next presented.

:mod:`clientregistry.ui.session` carries the token in a cookie; this module is the database
side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.security.tokens import (
    LOGOUT_EVENT,
    IssuedToken,
    audit_login,
    issue_token,
    now_utc,
    token_hash,
)
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditOutcome, Role
from clientregistry.store.models import Token, User

TOUCH_EVERY = timedelta(seconds=60)
"""How stale ``last_seen_at`` may get before a request writes it again."""
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The account behind a valid browser session (detached from its database session)."""

    id: int
    username: str
    role: Role
    language: str | None
    expires_at: datetime


def open_session(
    sessions: sessionmaker[Session], user: User, minutes: int, *, now: datetime | None = None
) -> IssuedToken:
    """Issue a browser-session token for ``user`` (who must be enabled), valid ``minutes`` at
    most."""
    moment = now or now_utc()
    with transaction(sessions) as session:
        account = session.get(User, user.id)
        if account is None or account.disabled:
            raise ValueError(f"account {user.username!r} cannot log in")
        issued = issue_token(session, account, minutes, now=moment)
        session.execute(
            update(Token)
            .where(Token.token_hash == token_hash(issued.token))
            .values(last_seen_at=moment)
        )
    return issued


def adopt_token(
    sessions: sessionmaker[Session], issued: IssuedToken, *, now: datetime | None = None
) -> None:
    """Make a token just issued by a login (:func:`.tokens.login`) a browser session."""
    with transaction(sessions) as session:
        session.execute(
            update(Token)
            .where(Token.token_hash == token_hash(issued.token))
            .values(last_seen_at=now or now_utc())
        )


def session_user(
    sessions: sessionmaker[Session],
    token: str,
    idle: timedelta,
    *,
    now: datetime | None = None,
) -> SessionUser | None:
    """The enabled account of a valid browser session, or None (unknown, expired, revoked,
    idle too long, an API token, a disabled account). Keeps the session alive."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    moment = now or now_utc()
    key = token_hash(token)
    with transaction(sessions, write=False) as session:
        row = session.get(Token, key)
        if row is None or row.revoked or row.expires_at <= moment or row.last_seen_at is None:
            return None
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        last_seen = row.last_seen_at
        found = SessionUser(user.id, user.username, user.role, user.language, row.expires_at)
    if moment - last_seen >= idle:
        with transaction(sessions) as session:
            session.execute(update(Token).where(Token.token_hash == key).values(revoked=True))
        return None
    if moment - last_seen >= TOUCH_EVERY:
        with transaction(sessions) as session:
            session.execute(
                update(Token).where(Token.token_hash == key).values(last_seen_at=moment)
            )
    return found


def close_session(
    sessions: sessionmaker[Session], token: str, *, source_address: str | None
) -> str | None:
    """Revoke a browser session and audit the logout; the account's username if the session
    was open."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    with transaction(sessions) as session:
        row = session.get(Token, token_hash(token))
        if row is None or row.revoked:
            return None
        row.revoked = True
        user = session.get(User, row.user_id)
        if user is None:
            return None
        detail = {"session": "browser"}
        audit_login(
            session, user.username, source_address, AuditOutcome.SUCCESS, LOGOUT_EVENT, detail
        )
        return user.username
