"""The blocking index in the database: :class:`DatabaseBlockingIndex`.

Keys are stored as signed 64-bit hashes (:func:`key_hash`) in ``blocking_key`` with primary
key ``(key_hash, record_id)``, so a lookup is an index range scan per key. A query is one
statement on either database::

    SELECT record_id, count(*) AS n, count(*) OVER () AS total
    FROM blocking_key WHERE key_hash IN (:hashes)
    GROUP BY record_id ORDER BY n DESC, record_id LIMIT :limit

``total`` (a window over the groups) is the number of distinct candidates, so ``capped`` and
``considered`` are exact, as in :class:`~clientregistry.matching.blocking.MemoryIndex`.
Candidates sharing as many keys come in ``record_id`` order (the memory index uses insertion
order; with a single key over the cap it keeps the newest records, this index the lowest ids).

Two keys with one hash (for n distinct keys, about n²/2**65 such pairs: none in practice)
would add a candidate, which scoring rejects, and make a record holding both keys count once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clientregistry.matching.blocking import CandidateSet
from clientregistry.store.columns import JsonText
from clientregistry.store.dialect import dialect_name, insert_for
from clientregistry.store.driver import DriverInsert, DriverQuery, DriverStatement
from clientregistry.store.models import BlockingKey

_SHARED = func.count().label("shared")


def _top_candidates(keys: ColumnElement[bool]) -> Select[str, int, int]:
    return (
        select(BlockingKey.record_id, _SHARED, func.count().over().label("total"))
        .where(keys)
        .group_by(BlockingKey.record_id)
        .order_by(_SHARED.desc(), BlockingKey.record_id)
        .limit(bindparam("limit", type_=Integer))
    )


TOP_CANDIDATES = _top_candidates(BlockingKey.key_hash.in_(bindparam("hashes", expanding=True)))
"""The candidates query: parameters ``hashes`` (:func:`key_hashes`) and ``limit``; columns
``record_id``, ``shared`` (keys in common) and ``total`` (distinct candidates in all). Join it
(as a subquery) to read the candidates' records in the same statement."""
TOP_CANDIDATES_ARRAY = _top_candidates(
    BlockingKey.key_hash == any_(bindparam("hashes", type_=ARRAY(BigInteger)))
)
""":data:`TOP_CANDIDATES` with ``hashes`` bound as one array (``= ANY(:hashes)``, PostgreSQL):
one statement text whatever the number of keys, for the driver
(:class:`~clientregistry.store.driver.DriverQuery`)."""
_TOP_CANDIDATES = DriverQuery(TOP_CANDIDATES, postgresql=TOP_CANDIDATES_ARRAY)


def json_values(name: str) -> Select[Any]:
    """``SELECT value FROM json_each(:name)``: the items of a list bound as one JSON
    parameter (SQLite), so that a long list is one parameter, not thousands."""
    return select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=JsonText()))
    )


_POSTINGS = DriverQuery(
    select(BlockingKey.key_hash, BlockingKey.record_id).where(
        BlockingKey.key_hash.in_(json_values("hashes"))
    ),
    postgresql=select(BlockingKey.key_hash, BlockingKey.record_id).where(
        BlockingKey.key_hash == any_(bindparam("hashes", type_=ARRAY(BigInteger)))
    ),
)
"""Every posting of some keys: parameter ``hashes``."""
_HASHES_PER_QUERY = 50_000
"""Keys per postings query."""
_DELETE_RECORD = DriverStatement(
    delete(BlockingKey).where(BlockingKey.record_id == bindparam("record"))
)
_INSERT_IGNORE: dict[str, DriverInsert] = {}
"""``INSERT … ON CONFLICT DO NOTHING`` per dialect name, built once."""
_INSERT = DriverInsert(insert(BlockingKey))
"""A plain ``INSERT`` (keys of records that have none yet)."""
_COLUMNS = ("key_hash", "record_id")


def key_hash(key: str) -> int:
    """A blocking key as a signed 64-bit integer (BLAKE2b, 8-byte digest, big-endian)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_hashes(keys: Iterable[str]) -> list[int]:
    """The distinct hashes of ``keys``, sorted."""
    return sorted({key_hash(key) for key in keys})


def _record_id(record: Hashable) -> str:
    if not isinstance(record, str):
        raise TypeError(f"record ids are strings (source record ids), not {type(record)}")
    return record


class DatabaseBlockingIndex:
    """A :class:`~clientregistry.matching.blocking.BlockingIndex` on the ``blocking_key``
    table, working in ``session``'s transaction (it never commits). Record ids are source
    record ids; the record must exist (or be pending in the session) before its keys are
    added."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, record: Hashable, keys: Sequence[str]) -> None:
        """Index ``record`` under ``keys`` (keys it already has are ignored)."""
        self.add_hashes(record, key_hashes(keys))

    def add_hashes(self, record: Hashable, hashes: Sequence[int]) -> None:
        """:meth:`add` for keys already hashed (:func:`key_hashes`)."""
        self.add_many([(_record_id(record), hashes)])

    def add_many(self, records: Iterable[tuple[str, Sequence[int]]]) -> None:
        """:meth:`add_hashes` for several records, in one statement."""
        rows = sorted((h, record_id) for record_id, hashes in records for h in hashes)
        if not rows:
            return
        self._session.flush()
        statement = _INSERT_IGNORE.get(dialect_name(self._session))
        if statement is None:
            statement = DriverInsert(
                insert_for(self._session, BlockingKey).on_conflict_do_nothing()
            )
            _INSERT_IGNORE[dialect_name(self._session)] = statement
        statement.execute_tuples(self._session.connection(), _COLUMNS, rows)

    def add_new(self, records: Iterable[tuple[str, Sequence[int]]]) -> None:
        """:meth:`add_many` for records that have no keys yet (created in this transaction),
        each with distinct hashes (:func:`key_hashes`): a plain insert, which PostgreSQL
        runs without the speculative insertion of ``ON CONFLICT`` for every row."""
        rows = sorted((h, record_id) for record_id, hashes in records for h in hashes)
        if rows:
            self._session.flush()
            _INSERT.execute_tuples(self._session.connection(), _COLUMNS, rows)

    def postings(self, hashes: Sequence[int]) -> dict[int, list[str]]:
        """The records under each of ``hashes`` (those that have any), in no order."""
        found: dict[int, list[str]] = {}
        connection = self._session.connection()
        for start in range(0, len(hashes), _HASHES_PER_QUERY):
            chunk = list(hashes[start : start + _HASHES_PER_QUERY])
            for key, record_id in _POSTINGS.send(connection, {"hashes": chunk}).all():
                records = found.get(key)
                if records is None:
                    found[key] = [record_id]
                else:
                    records.append(record_id)
        return found

    def remove(self, record: Hashable, keys: Sequence[str]) -> None:
        """Take ``record`` out of ``keys``' postings."""
        record_id = _record_id(record)
        hashes = key_hashes(keys)
        if not hashes:
            return
        self._session.connection().execute(
            delete(BlockingKey).where(
                BlockingKey.record_id == record_id, BlockingKey.key_hash.in_(hashes)
            )
        )

    def remove_record(self, record: Hashable) -> None:
        """Take ``record`` out of every posting (when its old keys are not known); runs on
        the driver, so it may go in a :func:`~clientregistry.store.driver.pipelined` batch."""
        _DELETE_RECORD.execute(self._session.connection(), {"record": _record_id(record)})

    def candidates(self, keys: Sequence[str], limit: int) -> CandidateSet:
        """Records sharing most of ``keys`` first, at most ``limit`` of them."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        hashes = key_hashes(keys)
        if not hashes:
            return CandidateSet([], False, 0)
        connection = self._session.connection()
        rows = _TOP_CANDIDATES.send(connection, {"hashes": hashes, "limit": limit}).all()
        if not rows:
            return CandidateSet([], False, 0)
        considered = int(rows[0][2])
        return CandidateSet([record_id for record_id, _, _ in rows], considered > limit, considered)
