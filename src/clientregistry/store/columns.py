"""Column types shared by the models: UTC timestamps, JSON text, features, string enums.

* :class:`UTCDateTime` always hands back timezone-aware UTC datetimes and refuses naive ones,
  on SQLite (which has no time zones) as on PostgreSQL (``timestamptz``).
* :class:`JsonText` keeps JSON as text (orjson), so a stored FHIR resource comes back as
  written and both databases hold the same thing.
* :class:`FeaturesJSON` stores :data:`~clientregistry.matching.features.Features`.
* :func:`string_enum` stores a ``StrEnum`` by value in a ``VARCHAR`` (no native enum types,
  so adding a value needs no ``ALTER TYPE``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import BigInteger, DateTime, Dialect, Enum, Integer, Text
from sqlalchemy.types import TypeDecorator, TypeEngine

from clientregistry.matching.features import Features
from clientregistry.store.features_codec import from_json_value, to_json_value

BigIntPK: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit surrogate key; ``INTEGER`` on SQLite so that it is the auto-incrementing rowid."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC ``datetime``."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a time zone (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonText(TypeDecorator[Any]):
    """Any JSON value, kept as text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return orjson.loads(value)


class FeaturesJSON(TypeDecorator[Features]):
    """A record's features, as written by :mod:`clientregistry.store.features_codec`."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Features | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return orjson.dumps(to_json_value(value)).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Features | None:
        if value is None:
            return None
        return from_json_value(orjson.loads(value))


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def string_enum(enum: type[StrEnum], length: int = 16) -> Enum:
    """A ``VARCHAR(length)`` column holding the enum's values."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=_values,
        validate_strings=True,
    )
