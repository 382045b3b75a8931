"""Accounts of people who log in by single sign-on (:mod:`clientregistry.security.oidc`).

The first login of a subject (``<issuer> <sub>``) creates an account named by the username
claim, with the mapped role and no usable password (it cannot log in with a password); each
later login brings the role up to date with the provider's (the provider is the source of
truth: a person moved to another group changes role at the next login). A username that is
already a local account's is refused (409): an identity provider must not take over an
account made here. A disabled account stays disabled. Every outcome is audited as a
``sso-login`` (DICOM User Authentication, Login) with the issuer and subject; failures do not
count towards the password throttling.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.security.oidc import Identity, OidcRefused
from clientregistry.security.tokens import audit_login, now_utc
from clientregistry.security.users import get_user
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditOutcome, Role
from clientregistry.store.models import User

SSO_EVENT = "sso-login"
NO_PASSWORD = "!sso"
"""The password hash of an account made by single sign-on: no password matches it."""


def audit_sso(
    sessions: sessionmaker[Session],
    username: str,
    source_address: str | None,
    outcome: AuditOutcome,
    detail: dict[str, Any],
) -> None:
    """Audit a single sign-on attempt in a transaction of its own."""
    with transaction(sessions) as session:
        audit_login(session, username, source_address, outcome, SSO_EVENT, detail)


def sign_in(
    sessions: sessionmaker[Session], identity: Identity, source_address: str | None
) -> User:
    """The account of ``identity`` (created at the first login), audited; :class:`OidcRefused`
    for a taken username or a disabled account."""
    detail: dict[str, Any] = {"issuer": identity.issuer, "subject": identity.subject[:255]}
    with transaction(sessions) as session:
        user = session.scalar(select(User).where(User.sso_subject == identity.sso_subject))
        refusal = None
        if user is None:
            taken = get_user(session, identity.username)
            if taken is not None:
                whose = "another sign-on's" if taken.sso_subject else "a local account"
                refusal = OidcRefused(
                    409, f"{identity.username!r} is {whose}; it cannot sign on", audited=True
                )
            else:
                user = User(
                    username=identity.username,
                    password_hash=NO_PASSWORD,
                    role=Role(identity.role),
                    disabled=False,
                    created_at=now_utc(),
                    sso_subject=identity.sso_subject,
                )
                session.add(user)
                session.flush()
                detail["created"] = True
        elif user.disabled:
            refusal = OidcRefused(403, f"the account {user.username!r} is disabled", audited=True)
        elif user.role != Role(identity.role):
            detail["role_before"] = user.role.value
            user.role = Role(identity.role)
        if refusal is not None or user is None:
            assert refusal is not None
            detail["reason"] = refusal.reason
            audit_login(
                session,
                identity.username,
                source_address,
                AuditOutcome.MINOR_FAILURE,
                SSO_EVENT,
                detail,
            )
        else:
            detail["role"] = user.role.value
            audit_login(
                session, user.username, source_address, AuditOutcome.SUCCESS, SSO_EVENT, detail
            )
    if refusal is not None:
        raise refusal
    assert user is not None
    return user
