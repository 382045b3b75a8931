"""Users' passwords: argon2id hashes (argon2-cffi's default RFC 9106 parameters), generated
passwords for new accounts, and the roles a user can have. There is no default password: an
account gets a generated one, shown once."""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES: tuple[str, ...] = ("admin", "reviewer", "auditor")
"""admin: everything; reviewer: resolves match reviews; auditor: reads the audit trail."""

PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_"
"""URL-safe characters: a generated password survives shells, URLs and config files."""

MIN_GENERATED_LENGTH = 12

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted; an encoded string to store as is)."""
    if not password:
        raise ValueError("a password cannot be empty")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; False (never an exception) for a wrong
    password or a hash that cannot be read."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether ``password_hash`` was made with other parameters than today's (hash the password
    again after a successful login); True for a hash that cannot be read."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def generate_password(length: int = 20) -> str:
    """A random URL-safe password (about 6 bits a character) that does not start with ``-``."""
    if length < MIN_GENERATED_LENGTH:
        raise ValueError(f"a generated password has at least {MIN_GENERATED_LENGTH} characters")
    first = secrets.choice(PASSWORD_ALPHABET.removesuffix("-_"))
    return first + "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length - 1))


def check_role(role: str) -> str:
    """``role`` if it is one of ``ROLES``; ValueError otherwise."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role
