"""Logging in: bearer tokens, and sign-in throttling that slows down password guessing.

Tokens
    A token is 32 random bytes (URL-safe base64, 43 characters). Only its SHA-256 (hex) is
    stored (:class:`~clientregistry.store.models.Token`), with an expiry
    (``settings.token_minutes``) and a ``revoked`` flag; ``POST /auth/logout`` revokes one,
    changing a password or disabling an account revokes all of that account's. A token is
    valid while it is unexpired, unrevoked and its account is enabled.

Sign-in throttling (counted from the audit table)
    Every login attempt is audited (``event_type`` ``login``; outcome 0 success, 4 wrong
    credentials). Failures slow down whoever makes them, with growing delays
    (:class:`LoginPolicy`): after :attr:`~LoginPolicy.free_failures` failures within
    :attr:`~LoginPolicy.window`, the next attempt must wait :attr:`~LoginPolicy.first_delay`
    after the last failure, doubling with each further failure up to a cap. Two counts:

    * **per address** — failures from one source address, whatever the usernames; the delay
      grows to :attr:`~LoginPolicy.max_delay` (15 minutes). An attacker at one address slows
      down only that address.
    * **per account** — failures for one username since its last successful login, from
      any address; the delay grows to :attr:`~LoginPolicy.account_max_delay` (1 minute) only,
      and does not apply at all from an address the account signed in from successfully in
      the last :attr:`~LoginPolicy.known_for` (30 days). So an attacker spreading guesses
      over many addresses gets about one per minute per account, and cannot keep the real
      person out: from their usual address they get in at once, from a new one within a
      minute.

    While an attempt must wait it is refused (429, ``Retry-After``) without checking the
    password; the refusal is audited as ``login-locked`` and counts for nothing. Because the
    counts come from the database, they hold across workers and restarts. Behind a reverse
    proxy the source address is the client's only when the proxy is trusted
    (:mod:`clientregistry.api.trusted_proxy`); otherwise everyone shares the proxy's. Attempts
    at the same moment may each see the counts before the others are recorded, so a burst
    can get a few more tries than the limit before the delay holds.

A password hash made with older argon2 parameters is replaced at the next successful login.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.registry.audit import DCM, audit_resource
from clientregistry.security.passwords import hash_password, needs_rehash, verify_password
from clientregistry.security.users import get_user
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction, AuditOutcome
from clientregistry.store.models import AuditEvent, Token, User

LOGIN_EVENT = "login"
LOCKED_EVENT = "login-locked"
LOGOUT_EVENT = "logout"
TOKEN_BYTES = 32
MAX_AGENT_LENGTH = 128
"""AuditEvent.agent column width: longer usernames typed at the login form are cut."""


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """How failed logins slow down the next attempt (see the module docstring)."""

    free_failures: int = 5
    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(minutes=15)
    account_max_delay: timedelta = timedelta(minutes=1)
    window: timedelta = timedelta(hours=1)
    known_for: timedelta = timedelta(days=30)

    def delay(self, failures: int, cap: timedelta) -> timedelta:
        """How long to wait after the last of ``failures`` failures (none below the free
        ones; then :attr:`first_delay`, doubling, at most ``cap``)."""
        if failures < self.free_failures:
            return timedelta(0)
        doublings = min(failures - self.free_failures, 32)
        return min(self.first_delay * (1 << doublings), cap)

    @property
    def counted(self) -> int:
        """Most failures worth counting: past these the delay is at its cap."""
        steps = 0
        while self.first_delay * (1 << steps) < self.max_delay and steps < 32:
            steps += 1
        return self.free_failures + steps + 1


DEFAULT_POLICY = LoginPolicy()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new bearer token (the only time its clear text exists) and its account."""

    token: str
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Why a login did not succeed: ``locked`` (429, retry after) or bad credentials (401)."""

    locked: bool
    retry_after: int = 0


def now_utc() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(
    session: Session, user: User, minutes: int, *, now: datetime | None = None
) -> IssuedToken:
    """A new token for ``user``, valid for ``minutes``."""
    moment = now or now_utc()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires = moment + timedelta(minutes=minutes)
    session.add(
        Token(
            token_hash=token_hash(token),
            user_id=user.id,
            expires_at=expires,
            revoked=False,
            created_at=moment,
        )
    )
    session.flush()
    return IssuedToken(token, expires, user)


def user_for_token(session: Session, token: str, *, now: datetime | None = None) -> User | None:
    """The enabled account a valid (known, unexpired, unrevoked) token belongs to, or None."""
    if not token or len(token) > 256:
        return None
    row = session.get(Token, token_hash(token))
    if row is None or row.revoked or row.expires_at <= (now or now_utc()):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return user


def revoke_token(session: Session, token: str) -> bool:
    """Revoke one token; whether it was valid until now."""
    row = session.get(Token, token_hash(token))
    if row is None or row.revoked:
        return False
    row.revoked = True
    session.flush()
    return True


def purge_expired(session: Session, *, now: datetime | None = None) -> None:
    """Drop tokens that expired more than a day ago (housekeeping at each login)."""
    cutoff = (now or now_utc()) - timedelta(days=1)
    session.execute(delete(Token).where(Token.expires_at < cutoff))


# ----------------------------------------------------------------------------- throttling


def _wait_ends(times: list[datetime], policy: LoginPolicy, cap: timedelta) -> datetime | None:
    """When the wait that failures at ``times`` (newest first) impose ends, if any."""
    wait = policy.delay(len(times), cap)
    return times[0] + wait if times and wait else None


def locked_until(
    session: Session,
    username: str,
    source_address: str | None,
    *,
    policy: LoginPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> datetime | None:
    """Until when an attempt for ``username`` from ``source_address`` must wait; None when
    it may go ahead now."""
    moment = now or now_utc()
    since = moment - policy.window
    agent = username[:MAX_AGENT_LENGTH]
    failed = (
        select(AuditEvent.recorded)
        .where(
            AuditEvent.event_type == LOGIN_EVENT,
            AuditEvent.outcome != AuditOutcome.SUCCESS,
            AuditEvent.recorded >= since,
        )
        .order_by(AuditEvent.recorded.desc())
        .limit(policy.counted)
    )
    succeeded = select(AuditEvent.recorded).where(
        AuditEvent.event_type == LOGIN_EVENT,
        AuditEvent.outcome == AuditOutcome.SUCCESS,
        AuditEvent.agent == agent,
    )
    ends = []
    if source_address:
        by_address = failed.where(AuditEvent.source_address == source_address)
        ends.append(_wait_ends(list(session.scalars(by_address)), policy, policy.max_delay))
    known = source_address is not None and (
        session.scalar(
            succeeded.where(
                AuditEvent.source_address == source_address,
                AuditEvent.recorded >= moment - policy.known_for,
            ).limit(1)
        )
        is not None
    )
    if not known:
        last_success = session.scalar(
            succeeded.where(AuditEvent.recorded >= since)
            .order_by(AuditEvent.recorded.desc())
            .limit(1)
        )
        by_account = failed.where(AuditEvent.agent == agent)
        if last_success is not None:
            by_account = by_account.where(AuditEvent.recorded > last_success)
        times = list(session.scalars(by_account))
        ends.append(_wait_ends(times, policy, policy.account_max_delay))
    active = [end for end in ends if end is not None and end > moment]
    return max(active) if active else None


# ----------------------------------------------------------------------------- login

_DUMMY_HASH: str | None = None
_OK = AuditOutcome.SUCCESS
_FAILED = AuditOutcome.MINOR_FAILURE


def _dummy_hash() -> str:
    """A hash to verify against when the username is unknown (same time as a known one)."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def login(
    sessions: sessionmaker[Session],
    username: str,
    password: str,
    *,
    source_address: str | None,
    minutes: int,
    policy: LoginPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> IssuedToken | LoginRefused:
    """Check a username and password and issue a token; every attempt is audited.

    The slow part (argon2) runs between two short transactions, never while holding the
    database's write lock: read the lock state and the hash, verify, then write the outcome.
    """
    moment = now or now_utc()
    with transaction(sessions, write=False) as session:
        until = locked_until(session, username, source_address, policy=policy, now=moment)
        found = get_user(session, username)
        stored = found.password_hash if found is not None else None
    if until is not None:
        detail = {"reason": "throttled", "locked_until": until.isoformat()}
        with transaction(sessions) as session:
            audit_login(
                session, username, source_address, _FAILED, LOCKED_EVENT, detail, now=moment
            )
        return LoginRefused(True, max(1, int((until - moment).total_seconds() + 0.999)))
    valid = verify_password(stored or _dummy_hash(), password)
    rehashed = hash_password(password) if valid and stored and needs_rehash(stored) else None
    with transaction(sessions) as session:
        user = get_user(session, username)
        if user is None or not valid or user.disabled or user.password_hash != stored:
            reason = (
                "unknown user"
                if user is None
                else "wrong password"
                if not valid
                else "disabled"
                if user.disabled
                else "password changed meanwhile"
            )
            detail = {"reason": reason}
            audit_login(session, username, source_address, _FAILED, LOGIN_EVENT, detail, now=moment)
            return LoginRefused(False)
        if rehashed is not None:
            user.password_hash = rehashed
        purge_expired(session, now=moment)
        issued = issue_token(session, user, minutes, now=moment)
        detail = {"role": user.role.value, "expires": issued.expires_at.isoformat()}
        audit_login(session, username, source_address, _OK, LOGIN_EVENT, detail, now=moment)
        return issued


def audit_login(
    session: Session,
    username: str,
    source_address: str | None,
    outcome: AuditOutcome,
    event_type: str,
    detail: dict[str, Any],
    *,
    now: datetime | None = None,
) -> None:
    """Audit a login, refused login or logout (DICOM 110114 User Authentication)."""
    moment = now or now_utc()
    agent = username[:MAX_AGENT_LENGTH]
    resource = audit_resource(
        action=AuditAction.EXECUTE.value,
        outcome=int(outcome),
        recorded=moment,
        agent=agent,
        agent_kind=AgentKind.USER,
        source_address=source_address,
        entity=None,
        interaction=event_type,
        detail=detail,
    )
    resource["type"] = {"system": DCM, "code": "110114", "display": "User Authentication"}
    code, display = ("110123", "Logout") if event_type == LOGOUT_EVENT else ("110122", "Login")
    resource["subtype"] = [{"system": DCM, "code": code, "display": display}]
    session.add(
        AuditEvent(
            recorded=moment,
            action=AuditAction.EXECUTE,
            outcome=int(outcome),
            event_type=event_type,
            agent=agent,
            agent_kind=AgentKind.USER,
            source_address=source_address,
            entity=None,
            detail=detail,
            resource=resource,
        )
    )
