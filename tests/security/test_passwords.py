"""Tests of argon2 password hashing, generated passwords and roles."""

from __future__ import annotations

import string

import pytest
from argon2 import PasswordHasher

from clientregistry.security.passwords import (
    ROLES,
    check_role,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_hash_and_verify() -> None:
    hashed = hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse battery staple")
    assert not verify_password(hashed, "correct horse battery stapler")
    assert not verify_password(hashed, "")


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_unicode_passwords() -> None:
    hashed = hash_password("Ŋgàmbi-wéé 🔑")
    assert verify_password(hashed, "Ŋgàmbi-wéé 🔑")
    assert not verify_password(hashed, "Ngambi-wee 🔑")


@pytest.mark.parametrize(
    "bad", ["", "garbage", "$argon2id$v=19$m=65536,t=3,p=4$broken", "$2b$12$x"]
)
def test_unreadable_hashes_never_verify(bad: str) -> None:
    assert verify_password(bad, "anything") is False
    assert needs_rehash(bad)


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_needs_rehash() -> None:
    assert not needs_rehash(hash_password("pw"))
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert needs_rehash(weak)
    assert verify_password(weak, "pw")  # still verifies: rehash after the login


def test_generated_passwords() -> None:
    allowed = set(string.ascii_letters + string.digits + "-_")
    passwords = [generate_password() for _ in range(200)]
    assert len(set(passwords)) == 200
    for password in passwords:
        assert len(password) == 20
        assert set(password) <= allowed
        assert password[0] not in "-_"
    assert len(generate_password(32)) == 32
    with pytest.raises(ValueError, match="at least 12"):
        generate_password(8)
    password = generate_password()
    assert verify_password(hash_password(password), password)


def test_roles() -> None:
    assert ROLES == ("admin", "reviewer", "auditor")
    for role in ROLES:
        assert check_role(role) == role
    with pytest.raises(ValueError, match="unknown role 'root'"):
        check_role("root")
