"""Accounts, bearer tokens and the login lockout (security.users, security.tokens), and the
``clientregistry users`` commands."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from clientregistry.cli_users import RoleName, users_app
from clientregistry.registry.setup import Installation, init_data_dir
from clientregistry.security import passwords, tokens, users
from clientregistry.security.passwords import verify_password
from clientregistry.security.tokens import DEFAULT_POLICY, IssuedToken, LoginRefused
from clientregistry.settings import load_settings
from clientregistry.store.db import create_engine_for, session_factory, transaction
from clientregistry.store.enums import AgentKind, Role
from clientregistry.store.models import AuditEvent, Token, User

PASSWORD = "a long enough password"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with small parameters: these tests hash and verify many passwords."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[Installation]:
    with fresh_database(request.param) as url:
        yield init_data_dir(tmp_path / "data", hostnames=[], database_url=url)


@pytest.fixture
def sessions(installation: Installation) -> Iterator[sessionmaker[Session]]:
    engine = create_engine_for(load_settings(installation.data_dir, environ={}).database)
    yield session_factory(engine)
    engine.dispose()


def _user(sessions: sessionmaker[Session], username: str) -> User:
    with transaction(sessions, write=False) as session:
        return users.require_user(session, username)


# ----------------------------------------------------------------------------- accounts


def test_add_user_hashes_with_argon2(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        user = users.add_user(session, "alice", PASSWORD, "reviewer")
    assert user.role is Role.REVIEWER and not user.disabled
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert verify_password(user.password_hash, PASSWORD)


@pytest.mark.parametrize(
    ("username", "password", "role", "error"),
    [
        ("admin", PASSWORD, "reviewer", users.UserExists),
        ("bob", "short", "reviewer", users.BadPassword),
        ("bob", " " * 20, "reviewer", users.BadPassword),
        ("bob", "x" * 2000, "reviewer", users.BadPassword),
        ("bob", PASSWORD, "superuser", users.UserError),
        ("-bob", PASSWORD, "reviewer", users.UserError),
        ("bo b", PASSWORD, "reviewer", users.UserError),
        ("", PASSWORD, "reviewer", users.UserError),
    ],
)
def test_add_user_refuses(
    sessions: sessionmaker[Session],
    username: str,
    password: str,
    role: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error), transaction(sessions) as session:
        users.add_user(session, username, password, role)


def test_the_last_enabled_admin_stays(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(users.UserError, match="last enabled admin"), transaction(sessions) as s:
        users.set_role(s, "admin", Role.AUDITOR)
    with pytest.raises(users.UserError, match="last enabled admin"), transaction(sessions) as s:
        users.set_disabled(s, "admin")
    with transaction(sessions) as session:
        users.add_user(session, "root2", PASSWORD, Role.ADMIN)
        users.set_role(session, "admin", Role.AUDITOR)
    assert _user(sessions, "admin").role is Role.AUDITOR
    with pytest.raises(users.UnknownUser), transaction(sessions) as session:
        users.set_role(session, "nobody", Role.ADMIN)


def test_has_role_admin_holds_every_role() -> None:
    admin, reviewer = User(role=Role.ADMIN), User(role=Role.REVIEWER)
    assert users.has_role(admin, [Role.AUDITOR]) and users.has_role(admin, [Role.REVIEWER])
    assert users.has_role(reviewer, [Role.REVIEWER])
    assert not users.has_role(reviewer, [Role.AUDITOR])
    assert not users.has_role(User(role=Role.AUDITOR), [Role.REVIEWER])


# ----------------------------------------------------------------------------- tokens


def test_only_the_hash_of_a_token_is_stored(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        admin = users.require_user(session, "admin")
        issued = tokens.issue_token(session, admin, 30, now=T0)
    with transaction(sessions, write=False) as session:
        stored = session.scalars(select(Token)).all()
    assert [t.token_hash for t in stored] == [hashlib.sha256(issued.token.encode()).hexdigest()]
    assert issued.token not in {t.token_hash for t in stored}
    assert stored[0].expires_at == T0 + timedelta(minutes=30)


def test_tokens_expire_and_are_revoked(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        admin = users.require_user(session, "admin")
        first = tokens.issue_token(session, admin, 30, now=T0).token
        second = tokens.issue_token(session, admin, 30, now=T0).token
    with transaction(sessions) as session:
        inside = T0 + timedelta(minutes=29)
        assert tokens.user_for_token(session, first, now=inside) is not None
        assert tokens.user_for_token(session, first, now=T0 + timedelta(minutes=30)) is None
        assert tokens.user_for_token(session, "made-up", now=inside) is None
        assert tokens.user_for_token(session, "", now=inside) is None
        assert tokens.revoke_token(session, first)
        assert not tokens.revoke_token(session, first)
        assert tokens.user_for_token(session, first, now=inside) is None
        assert tokens.user_for_token(session, second, now=inside) is not None


def test_password_change_and_disabling_end_sessions(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        users.add_user(session, "alice", PASSWORD, Role.REVIEWER)
        alice = users.require_user(session, "alice")
        one = tokens.issue_token(session, alice, 30).token
    with transaction(sessions) as session:
        users.set_password(session, "alice", "another long password")
        assert tokens.user_for_token(session, one) is None
        alice = users.require_user(session, "alice")
        two = tokens.issue_token(session, alice, 30).token
        users.set_disabled(session, "alice")
        assert tokens.user_for_token(session, two) is None
        users.set_disabled(session, "alice", False)
        assert tokens.user_for_token(session, two) is None  # revoked, not just hidden


# ----------------------------------------------------------------------------- login


def _login(
    sessions: sessionmaker[Session],
    username: str,
    password: str,
    at: datetime,
    address: str | None = "10.1.1.1",
) -> IssuedToken | LoginRefused:
    return tokens.login(sessions, username, password, source_address=address, minutes=60, now=at)


def test_login_issues_a_token_and_audits(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    issued = _login(sessions, "admin", installation.admin_password, T0)
    assert isinstance(issued, IssuedToken) and issued.expires_at == T0 + timedelta(minutes=60)
    assert _login(sessions, "admin", "wrong password!", T0) == LoginRefused(False)
    assert _login(sessions, "ghost", "wrong password!", T0) == LoginRefused(False)
    with transaction(sessions, write=False) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.event_type, e.agent, e.outcome) for e in events] == [
        ("login", "admin", 0),
        ("login", "admin", 4),
        ("login", "ghost", 4),
    ]
    assert events[1].detail == {"reason": "wrong password"}
    assert events[2].detail == {"reason": "unknown user"}
    assert all(e.agent_kind is AgentKind.USER and e.source_address == "10.1.1.1" for e in events)
    assert events[0].resource is not None
    assert events[0].resource["type"]["code"] == "110114"


def test_an_old_hash_is_replaced_at_login(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with transaction(sessions) as session:
        users.add_user(session, "alice", PASSWORD, Role.REVIEWER)
    old = _user(sessions, "alice").password_hash
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=2, memory_cost=2048))
    assert isinstance(_login(sessions, "alice", PASSWORD, T0), IssuedToken)
    new = _user(sessions, "alice").password_hash
    assert new != old and "m=2048,t=2" in new and verify_password(new, PASSWORD)


def test_failures_from_one_address_grow_its_delay(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    """Five failures are free; then the address waits 30 s, 60 s, 2 min ... at most 15 min
    after its last failure, even with the right password; refusals count for nothing."""
    good = installation.admin_password
    at = T0
    for _ in range(DEFAULT_POLICY.free_failures):
        assert _login(sessions, "admin", "wrong password!", at, "10.6.6.6") == LoginRefused(False)
        at += timedelta(seconds=1)
    expected = [30, 60, 120, 240, 480, 900, 900]
    for wait in expected:
        last = at - timedelta(seconds=1)  # the last failure
        refused = _login(sessions, "admin", good, last + timedelta(seconds=wait - 1), "10.6.6.6")
        assert isinstance(refused, LoginRefused) and refused.locked, wait
        assert refused.retry_after == 1
        at = last + timedelta(seconds=wait)
        again = _login(sessions, "admin", "wrong password!", at, "10.6.6.6")
        assert again == LoginRefused(False), wait  # checked (and wrong) once the wait is over
        at += timedelta(seconds=1)
    with transaction(sessions, write=False) as session:
        kinds = session.scalars(select(AuditEvent.event_type).order_by(AuditEvent.id)).all()
    per_step = ["login-locked", "login"]
    assert kinds == ["login"] * DEFAULT_POLICY.free_failures + per_step * len(expected)


def test_an_attacker_elsewhere_cannot_keep_the_admin_out(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    """Guesses at the admin's password from one address slow down that address; the admin
    signs in at once from the address they used before, and within a minute from a new one."""
    good = installation.admin_password
    assert isinstance(_login(sessions, "admin", good, T0, "10.0.0.1"), IssuedToken)  # home
    at = T0 + timedelta(hours=1)
    for n in range(20):
        _login(sessions, "admin", "wrong password!", at + timedelta(seconds=n), "192.0.2.66")
    at += timedelta(seconds=20)
    attacker = _login(sessions, "admin", good, at, "192.0.2.66")
    assert isinstance(attacker, LoginRefused) and attacker.locked
    assert isinstance(_login(sessions, "admin", good, at, "10.0.0.1"), IssuedToken)
    # (the success resets the account's count: a new address is not slowed either)
    assert isinstance(_login(sessions, "admin", good, at, "10.0.0.2"), IssuedToken)


def test_guesses_spread_over_addresses_slow_the_account_a_minute_at_most(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    good = installation.admin_password
    last = T0
    for n in range(12):  # each once the account's wait is over, from an address of its own
        last = T0 + timedelta(seconds=61 * n)
        failed = _login(sessions, "admin", "wrong password!", last, f"198.51.100.{n}")
        assert failed == LoginRefused(False)
    new = _login(sessions, "admin", good, last + timedelta(seconds=59), "203.0.113.1")
    assert isinstance(new, LoginRefused) and new.locked and new.retry_after == 1
    later = _login(sessions, "admin", good, last + timedelta(seconds=60), "203.0.113.1")
    assert isinstance(later, IssuedToken)


def test_a_success_resets_the_username_count(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    for minute in range(4):
        _login(sessions, "admin", "wrong password!", T0 + timedelta(minutes=minute), None)
    ok = _login(sessions, "admin", installation.admin_password, T0 + timedelta(minutes=4), None)
    assert isinstance(ok, IssuedToken)
    for minute in range(5, 9):
        _login(sessions, "admin", "wrong password!", T0 + timedelta(minutes=minute), None)
    last = _login(sessions, "admin", installation.admin_password, T0 + timedelta(minutes=9), None)
    assert isinstance(last, IssuedToken)


def test_failures_spread_out_do_not_lock(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    for step in range(6):
        _login(sessions, "admin", "wrong password!", T0 + timedelta(minutes=4 * step), None)
    later = T0 + timedelta(minutes=21)
    assert isinstance(_login(sessions, "admin", installation.admin_password, later), IssuedToken)


def test_one_address_trying_many_usernames_is_locked(
    sessions: sessionmaker[Session], installation: Installation
) -> None:
    for n in range(DEFAULT_POLICY.free_failures):
        _login(sessions, f"guess{n}", "wrong password!", T0, "192.0.2.7")
    refused = _login(sessions, "admin", installation.admin_password, T0, "192.0.2.7")
    assert isinstance(refused, LoginRefused) and refused.locked
    elsewhere = _login(sessions, "admin", installation.admin_password, T0, "192.0.2.8")
    assert isinstance(elsewhere, IssuedToken)


# ----------------------------------------------------------------------------- CLI


def _run(args: list[str], data_dir: Path, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(users_app, [*args, "--data-dir", str(data_dir)], input=stdin)
    return result.exit_code, result.output


def test_users_cli(installation: Installation, sessions: sessionmaker[Session]) -> None:
    data = installation.data_dir
    code, output = _run(["add", "alice", "--role", "reviewer"], data, PASSWORD + "\n")
    assert code == 0, output
    alice = _user(sessions, "alice")
    assert alice.role is Role.REVIEWER and verify_password(alice.password_hash, PASSWORD)

    code, output = _run(["list"], data)
    assert code == 0 and "alice" in output and "reviewer" in output and "admin" in output

    code, output = _run(["set-role", "alice", "auditor"], data)
    assert code == 0 and _user(sessions, "alice").role is Role.AUDITOR

    code, output = _run(["set-password", "alice"], data, "a different password\n")
    assert code == 0, output
    assert verify_password(_user(sessions, "alice").password_hash, "a different password")

    code, output = _run(["disable", "alice"], data)
    assert code == 0 and _user(sessions, "alice").disabled
    code, output = _run(["disable", "alice", "--enable"], data)
    assert code == 0 and not _user(sessions, "alice").disabled

    with transaction(sessions, write=False) as session:
        audited = session.scalars(
            select(AuditEvent.event_type).where(AuditEvent.agent.like("cli%"))
        ).all()
    assert audited == ["user-add", "user-change", "user-change", "user-change", "user-change"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "bob", "--role", "reviewer"], "short\n", "at least 12"),
        (["add", "bob", "--role", "reviewer"], "", "empty"),
        (["add", "admin", "--role", "reviewer"], PASSWORD + "\n", "already exists"),
        (["add", "bad/name", "--role", "reviewer"], PASSWORD + "\n", "invalid username"),
        (["set-password", "nobody"], PASSWORD + "\n", "no user named"),
        (["set-role", "admin", "auditor"], None, "last enabled admin"),
        (["disable", "admin"], None, "last enabled admin"),
    ],
)
def test_users_cli_errors(
    installation: Installation, args: list[str], stdin: str | None, message: str
) -> None:
    code, output = _run(args, installation.data_dir, stdin)
    assert code == 2
    assert message in " ".join(output.split())


def test_users_cli_needs_a_configured_data_dir(tmp_path: Path) -> None:
    code, output = _run(["list"], tmp_path / "nothing")
    assert code == 2 and "clientregistry init" in " ".join(output.split())


def test_the_command_line_knows_every_role() -> None:
    assert [r.value for r in RoleName] == [r.value for r in Role]


def test_users_cli_rejects_an_unknown_role(installation: Installation) -> None:
    code, _ = _run(["add", "bob", "--role", "root"], installation.data_dir, PASSWORD + "\n")
    assert code == 2
