"""The blocking index in the database: :class:`DatabaseBlockingIndex`.

Keys are stored as signed 64-bit hashes (:func:`key_hash`) in ``blocking_key`` with primary
key ``(key_hash, record_id)``, so a lookup is an index range scan per key.

The registry chooses a record's candidates as ``dedupe`` does
(:func:`~clientregistry.matching.blocking.select_candidates`), with record ids for input
positions (ids made one after another sort in creation order,
:func:`~clientregistry.store.models.new_id`), in one statement (:data:`SELECTED_CANDIDATES`):

* of each of the record's keys (in the record's key order) only the block's newest
  ``block_limit`` records (highest ids: ids the registry makes sort in creation order; a
  record created with an id its client chose sorts by that id) count, so that the work per
  record stays bounded however large the registry grows;
* the records those share two or more keys with the record come first: most keys in common,
  then the first of the record's keys they share, then oldest first;
* then at most ``single_limit`` records that share just one key, from the smallest blocks
  first (a block of more than ``block_limit`` records counts as ``block_limit + 1``, since
  only that many are read; ties in key order), each block newest first;
* cut at ``limit``; ``total`` is the number of distinct records read, ``multi`` of those
  sharing two or more keys, so that ``capped`` is exact.

Two keys with one hash (for n distinct keys, about n²/2**65 such pairs: none in practice)
would add a candidate, which scoring rejects, and make a record holding both keys count once.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import Subquery, TableValuedAlias

from clientregistry.matching import blocking
from clientregistry.matching.blocking import CandidateSet, select_candidates
from clientregistry.store.columns import JsonText
from clientregistry.store.dialect import dialect_name, insert_for
from clientregistry.store.driver import DriverInsert, DriverQuery, DriverStatement
from clientregistry.store.models import BlockingKey

DEFAULT_SINGLE_LIMIT = blocking.DEFAULT_SINGLE_LIMIT
DEFAULT_BLOCK_LIMIT = blocking.DEFAULT_BLOCK_LIMIT


_OLDER = aliased(BlockingKey)


def _newest_of(key: ColumnElement[int]) -> ColumnElement[bool]:
    """The join condition that reads the block of ``key`` (a column of the outer query) only
    as far as its newest ``block_limit + 1`` records: an index range scan of that many entries
    however large the block (the record one further back is found first, by a scan of the
    same length)."""
    floor = (
        select(_OLDER.record_id)
        .where(_OLDER.key_hash == key)
        .order_by(_OLDER.record_id.desc())
        .limit(1)
        .offset(bindparam("block_limit", type_=Integer))
        .scalar_subquery()
    )
    return (BlockingKey.key_hash == key) & (BlockingKey.record_id >= func.coalesce(floor, ""))


def _read_blocks(keys: TableValuedAlias, place: ColumnElement[Any], lateral: bool) -> Subquery:
    """``(key_place, record_id, age, size)``: the newest ``block_limit + 1`` records of the
    block of each of ``keys`` (hash column ``value``; ``place`` tells the keys apart), each
    with its place from the newest (``age``, from 1) and the block's size as far as read.
    ``lateral`` (PostgreSQL): one index scan a key, stopped after that many; otherwise
    (SQLite, which has no ``LATERAL``) the range scan of :func:`_newest_of`."""
    record: ColumnElement[Any]
    if lateral:
        newest = (
            select(BlockingKey.record_id)
            .where(BlockingKey.key_hash == keys.c.value)
            .order_by(BlockingKey.record_id.desc())
            .limit(bindparam("block_limit", type_=Integer) + 1)
            .lateral("newest")
        )
        record = newest.c.record_id
        blocks = select().select_from(keys).join(newest, true())
    else:
        record = BlockingKey.__table__.c.record_id
        blocks = select().select_from(keys).join(BlockingKey, _newest_of(keys.c.value))
    return blocks.add_columns(
        place.label("key_place"),
        record.label("record_id"),
        func.row_number().over(partition_by=place, order_by=record.desc()).label("age"),
        func.count().over(partition_by=place).label("size"),
    ).subquery("posted")


def _selection(
    keys: TableValuedAlias, place_column: str, *, lateral: bool = False
) -> Select[str, int, int, int]:
    """The selective choice (see the module's notes) among the records under ``keys``
    (columns ``place_column``, the key's place in the record's keys, and ``value``, its
    hash)."""
    posted = _read_blocks(keys, keys.c[place_column], lateral)
    read = (
        select(
            posted.c.record_id,
            func.count().label("shared"),
            func.min(posted.c.key_place).label("first_key"),
            func.min(posted.c.size).label("size"),
        )
        .where(posted.c.age <= bindparam("block_limit", type_=Integer))
        .group_by(posted.c.record_id)
        .subquery("shared_keys")
    )
    multi = read.c.shared > 1
    order = [
        read.c.shared.desc(),
        case((multi, 0), else_=read.c.size),  # one key in common: the smallest blocks first
        read.c.first_key,
        case((multi, read.c.record_id)),  # several keys: oldest first (ones sharing one: null)
        read.c.record_id.desc(),  # one key: newest first
    ]
    ranked = select(
        read.c.record_id,
        func.row_number().over(order_by=order).label("rank"),
        func.sum(case((multi, 1), else_=0)).over().label("multi"),
        func.count().over().label("total"),
    ).subquery("ranked")
    limit = bindparam("limit", type_=Integer)
    singles = bindparam("single_limit", type_=Integer)
    rank, shared_records = ranked.c.rank, ranked.c.multi
    taken = (rank <= shared_records) | (
        (shared_records < limit) & (rank <= shared_records + singles)
    )
    return select(
        ranked.c.record_id,
        (limit + 1 - rank).label("preference"),
        ranked.c.multi,
        ranked.c.total,
    ).where(taken & (rank <= limit))


SELECTED_CANDIDATES = _selection(
    func.json_each(bindparam("hashes", type_=JsonText()))
    .table_valued("key", "value")
    .alias("record_keys"),
    "key",
)
"""The candidates query: parameters ``hashes`` (the record's key hashes in its keys' order,
distinct: :func:`ordered_key_hashes`), ``limit``, ``block_limit`` and ``single_limit``;
columns ``record_id``, ``preference`` (higher first: ``limit + 1 -`` the candidate's rank),
``multi`` and ``total`` (see the module's notes), in no order. Join it (as a subquery) to
read the candidates' records in the same statement. SQLite: the hashes go as one JSON list."""
SELECTED_CANDIDATES_ARRAY = _selection(
    func.unnest(bindparam("hashes", type_=ARRAY(BigInteger)))
    .table_valued("value", with_ordinality="key_place")
    .render_derived(name="record_keys"),
    "key_place",
    lateral=True,
)
""":data:`SELECTED_CANDIDATES` with ``hashes`` bound as one array (PostgreSQL,
``unnest … WITH ORDINALITY``)."""
_SELECTED_CANDIDATES = DriverQuery(SELECTED_CANDIDATES, postgresql=SELECTED_CANDIDATES_ARRAY)


def selection_params(
    hashes: Sequence[int],
    limit: int,
    *,
    block_limit: int = DEFAULT_BLOCK_LIMIT,
    single_limit: int = DEFAULT_SINGLE_LIMIT,
) -> dict[str, Any]:
    """The parameters of :data:`SELECTED_CANDIDATES` for a record's ``hashes``."""
    return {
        "hashes": list(hashes),
        "limit": limit,
        "block_limit": block_limit,
        "single_limit": single_limit,
    }


def candidate_set(
    rows: Sequence[tuple[Any, ...]], limit: int, single_limit: int = DEFAULT_SINGLE_LIMIT
) -> CandidateSet:
    """The :class:`CandidateSet` of :data:`SELECTED_CANDIDATES`' rows (``record_id``,
    ``preference``, ``multi``, ``total``)."""
    if not rows:
        return CandidateSet([], False, 0)
    multi, total = int(rows[0][2]), int(rows[0][3])
    chosen = multi + (min(total - multi, single_limit) if multi < limit else 0)
    ordered = sorted(rows, key=lambda row: -int(row[1]))
    return CandidateSet([row[0] for row in ordered], chosen > limit, total)


def json_values(name: str) -> Select[Any]:
    """``SELECT value FROM json_each(:name)``: the items of a list bound as one JSON
    parameter (SQLite), so that a long list is one parameter, not thousands."""
    return select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=JsonText()))
    )


def _newest_postings(keys: TableValuedAlias, *, lateral: bool = False) -> Select[int, str, int]:
    posted = _read_blocks(keys, keys.c.value, lateral)
    return select(posted.c.key_place, posted.c.record_id, posted.c.size).where(
        posted.c.age <= bindparam("block_limit", type_=Integer)
    )


_NEWEST_POSTINGS = DriverQuery(
    _newest_postings(
        func.json_each(bindparam("hashes", type_=JsonText()))
        .table_valued("value")
        .alias("batch_keys")
    ),
    postgresql=_newest_postings(
        func.unnest(bindparam("hashes", type_=ARRAY(BigInteger)))
        .table_valued("value")
        .render_derived(name="batch_keys"),
        lateral=True,
    ),
)
"""The newest ``block_limit`` postings of some keys (``hashes``, distinct), with their
blocks' sizes as far as read (at most ``block_limit + 1``)."""
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


def ordered_key_hashes(keys: Iterable[str]) -> list[int]:
    """The distinct hashes of ``keys``, in their order (the first of equal ones)."""
    return list(dict.fromkeys(key_hash(key) for key in keys))


@dataclass(slots=True)
class Block:
    """The records under one key as the candidate choice reads them: how many there are in
    all, and the newest of them, oldest first."""

    size: int
    records: list[str]


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

    def newest_postings(self, hashes: Sequence[int], block_limit: int) -> dict[int, Block]:
        """The blocks of ``hashes`` (those that have records), each with its newest
        ``block_limit`` records."""
        found: dict[int, Block] = {}
        connection = self._session.connection()
        for start in range(0, len(hashes), _HASHES_PER_QUERY):
            chunk = list(hashes[start : start + _HASHES_PER_QUERY])
            params = {"hashes": chunk, "block_limit": block_limit}
            for key, record_id, size in _NEWEST_POSTINGS.send(connection, params).all():
                block = found.get(key)
                if block is None:
                    found[key] = Block(size, [record_id])
                else:
                    block.records.append(record_id)
        for block in found.values():
            block.records.sort()
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

    def candidates(
        self,
        keys: Sequence[str],
        limit: int,
        *,
        block_limit: int = DEFAULT_BLOCK_LIMIT,
        single_limit: int = DEFAULT_SINGLE_LIMIT,
    ) -> CandidateSet:
        """The records chosen as candidates for a record with ``keys`` (see the module's
        notes), best first, at most ``limit`` of them."""
        if min(limit, block_limit, single_limit) < 1:  # no rows must mean no records
            raise ValueError(
                f"limit, block_limit and single_limit must be at least 1, "
                f"not {limit}, {block_limit} and {single_limit}"
            )
        hashes = ordered_key_hashes(keys)
        if not hashes:
            return CandidateSet([], False, 0)
        params = selection_params(hashes, limit, block_limit=block_limit, single_limit=single_limit)
        rows = _SELECTED_CANDIDATES.send(self._session.connection(), params).all()
        return candidate_set(rows, limit, single_limit)


def rank_new_records(
    blocks: dict[int, Block],
    record_ids: Sequence[str],
    hashes: Sequence[Sequence[int]],
    limit: int,
    *,
    block_limit: int = DEFAULT_BLOCK_LIMIT,
    single_limit: int = DEFAULT_SINGLE_LIMIT,
) -> list[list[str]]:
    """For each new record, in order (``record_ids``, with their key hashes in key order),
    the records chosen as its candidates among the stored ones (``blocks``:
    :meth:`DatabaseBlockingIndex.newest_postings` of every key, to which the new records are
    added as they come, in id order) and the new ones before it, best first, at most
    ``limit``: what :meth:`DatabaseBlockingIndex.candidates` (:data:`SELECTED_CANDIDATES`)
    would answer once the records before it were stored. A batch's candidates from one
    read of the postings."""
    ranked = []
    for record_id, keys in zip(record_ids, hashes, strict=True):
        read: list[list[str]] = []
        sizes: list[int] = []
        for key in keys:
            block = blocks.get(key)
            if block is None:
                blocks[key] = Block(1, [record_id])
                continue
            records = block.records
            if len(records) > 2 * block_limit:
                del records[:-block_limit]
            read.append(records[-block_limit:])
            sizes.append(min(block.size, block_limit + 1))
            bisect.insort(records, record_id)  # after the stored ones, unless a client chose one
            block.size += 1
        ranked.append(select_candidates(read, sizes, limit, single_limit).ids)
    return ranked
