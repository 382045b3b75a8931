"""Prebuilt statements run straight on the database driver: the hot path's writes and reads.

SQLAlchemy Core spends ~40 µs of bookkeeping on each statement (cache key, execution
context, events, result wrapper) around the driver's few microseconds, and a submission
inserts into eight tables while holding SQLite's single write turn. :class:`DriverInsert`
compiles its statement once per dialect and set of columns with SQLAlchemy (so the SQL, the
parameter style and every column type's conversion are SQLAlchemy's own), then hands the
converted rows to the driver's cursor on the connection's current transaction. Driver errors
come out as SQLAlchemy's exceptions, as from ``Connection.execute``, so
:func:`~clientregistry.store.db.translate_errors` treats them alike.

Several rows at once go to the driver's ``executemany`` on SQLite (one prepared statement,
rebound per row, all in C). On PostgreSQL ``executemany`` runs a statement per row (psycopg
pipelines them, but the server still parses, binds and runs each, and a submission inserts
thirty-odd rows), so there the rows go as one array per column into a single
``INSERT … SELECT … FROM unnest(:col1::type[], :col2::type[], …)``: one statement whose text
does not depend on the number of rows, so psycopg prepares it once per connection and the
server plans it once. Conflict clauses (``ON CONFLICT …``) are kept.

Only plain inserts qualify: every column without a server-side default must be given (a
statement that would need SQLAlchemy to fill in a Python-side default is refused when it is
compiled), and nothing is returned.

:class:`DriverStatement` does the same for an ``UPDATE`` or ``DELETE``, and
:class:`DriverQuery` for a ``SELECT`` (its rows converted by the columns' types). On
PostgreSQL, statements run inside :func:`pipelined` are sent without waiting for each other
(psycopg's pipeline mode), so a submission's reads go in one round trip and its writes, with
the ``COMMIT``, in another.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Dialect, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Delete, Executable, Insert, Update
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import SelectBase

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    positional: tuple[str, ...] | None
    """Bind names in the order of the driver's ``?`` placeholders; None for named styles."""
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    compiled: SQLCompiler
    direct: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None
    """For a ``?``-style statement whose every placeholder is one of the given columns: the
    placeholders that convert their value (position, conversion), so that rows are built
    without :meth:`SQLCompiler.construct_params` (a tenth of the time, for many rows)."""

    def row(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for one row: a tuple (``?`` style) or a mapping."""
        params = self.compiled.construct_params(dict(values))
        for name, process in self.processors:
            params[name] = process(params[name])
        if self.positional is None:
            return params
        return tuple(params[name] for name in self.positional)

    def rows(self, batch: Sequence[Mapping[str, Any]]) -> list[Any]:
        """:meth:`row` for each of ``batch`` (rows with the same columns)."""
        direct, names = self.direct, self.positional
        if direct is None or names is None:
            return [self.row(values) for values in batch]
        pick = operator.itemgetter(*names)
        if len(names) == 1:
            rows: list[Any] = [[pick(values)] for values in batch]
        elif not direct:
            return [pick(values) for values in batch]
        else:
            rows = [list(pick(values)) for values in batch]
        for position, process in direct:
            for params in rows:
                params[position] = process(params[position])
        return rows


BEGIN_DUE = "clientregistry_begin_due"
"""Connection ``info`` key: a transaction has begun and its ``BEGIN`` is not sent yet
(PostgreSQL; see :func:`clientregistry.store.db.create_engine_for`)."""


def _info(connection: Any) -> dict[Any, Any]:
    """The ``info`` of SQLAlchemy's pooled ``connection``; empty (and not kept) for the one
    the dialect first connects with, which has none."""
    try:
        info: dict[Any, Any] = connection.info
    except NotImplementedError:
        return {}
    return info


def mark_begin_due(connection: Any) -> None:
    """``connection`` (SQLAlchemy's pooled connection) begins a transaction: its first
    statement sends ``BEGIN`` first."""
    _info(connection)[BEGIN_DUE] = True


def clear_due_begin(connection: Any) -> None:
    _info(connection).pop(BEGIN_DUE, None)


def send_due_begin(connection: Any, cursor: Any) -> None:
    """Send a due ``BEGIN`` on the connection of ``cursor`` (in pipeline mode only queued;
    not on the cursor itself, which may be a server-side one)."""
    if _info(connection).pop(BEGIN_DUE, False):
        cursor.connection.execute("BEGIN")


def _cursor(connection: Connection) -> Any:
    """A driver cursor in ``connection``'s transaction (its ``BEGIN`` sent, when due)."""
    pooled = connection.connection
    cursor = pooled.cursor()
    send_due_begin(pooled, cursor)
    return cursor


class DriverInsert:
    """An ``INSERT`` executed on the driver's cursor (see the module notes)."""

    def __init__(self, statement: Insert) -> None:
        self._statement = statement
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def execute(
        self, connection: Connection, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert one row (a mapping) or several (all with the same columns)."""
        batch = [rows] if isinstance(rows, Mapping) else list(rows)
        if not batch:
            return
        dialect = connection.dialect
        columns = tuple(batch[0])
        arrays = len(batch) > 1 and dialect.name == "postgresql"
        plan = self._plan(dialect, columns, arrays)
        if arrays:
            params = [plan.row({name: [row[name] for row in batch] for name in columns})]
        else:
            params = plan.rows(batch)
        _run(connection, plan.sql, params)

    def execute_tuples(
        self, connection: Connection, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
    ) -> None:
        """:meth:`execute` for rows given as sequences of the values of ``columns``, in that
        order (many rows of few columns: no mapping to build for each)."""
        if not rows:
            return
        dialect = connection.dialect
        arrays = len(rows) > 1 and dialect.name == "postgresql"
        plan = self._plan(dialect, columns, arrays)
        if arrays:
            transposed = zip(*rows, strict=True)
            values = {name: list(column) for name, column in zip(columns, transposed, strict=True)}
            _run(connection, plan.sql, [plan.row(values)])
        elif plan.direct == () and plan.positional == columns:
            _run(connection, plan.sql, list(rows))  # (the driver takes them as they are)
        else:
            self.execute(connection, [dict(zip(columns, row, strict=True)) for row in rows])

    def _plan(self, dialect: Dialect, columns: tuple[str, ...], arrays: bool) -> _Plan:
        key = (dialect.name + ("[]" if arrays else ""), columns)
        plan = self._plans.get(key)
        if plan is None:
            statement = self._unnest(columns) if arrays else self._statement
            plan = _compile(statement, dialect, columns)
            if arrays:
                plan = _binary_arrays(plan, columns)
            self._plans[key] = plan
        return plan

    def _unnest(self, columns: tuple[str, ...]) -> Insert:
        """The statement as ``INSERT … SELECT … FROM unnest(<one array per column>)``
        (PostgreSQL), binding each column's values as one array named after the column."""
        table = self._statement.table
        arrays = [bindparam(name, type_=ARRAY(table.c[name].type)) for name in columns]
        rows = func.unnest(*arrays).table_valued(*columns).render_derived()
        return self._statement.from_select(columns, select(*[rows.c[name] for name in columns]))


class DriverStatement:
    """An ``UPDATE`` or ``DELETE`` (one set of parameters, no expanding ``IN``) executed on
    the driver's cursor, as :class:`DriverInsert` does: for use in :func:`pipelined`."""

    def __init__(self, statement: Update | Delete) -> None:
        self._statement = statement
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        dialect = connection.dialect
        names = tuple(params)
        plan = self._plans.get((dialect.name, names))
        if plan is None:
            plan = self._plans[(dialect.name, names)] = _compile(self._statement, dialect, names)
        _run(connection, plan.sql, [plan.row(params)])


class DriverQuery:
    """A ``SELECT`` run on the driver's cursor, compiled once per dialect as
    :class:`DriverInsert` is; its rows are converted by the columns' types as SQLAlchemy would.

    Inside :func:`pipelined` on PostgreSQL :meth:`send` only queues the query, so several
    reads (and the transaction's ``BEGIN``) go in one round trip: read the rows
    (:meth:`PendingRows.all`) after the block. ``postgresql`` is the statement to run there
    when it differs (an array instead of an expanding ``IN``, which the driver cannot take);
    elsewhere the statement runs at once, on the driver's cursor too (through SQLAlchemy when
    it has an expanding ``IN`` or no transaction has begun). Array parameters go to
    PostgreSQL in binary (see :func:`_binary_arrays`).
    """

    def __init__(
        self,
        statement: SelectBase,
        *,
        postgresql: SelectBase | None = None,
    ) -> None:
        self._executable = cast(Executable, statement)  # a Select or TextualSelect: both are
        self._postgresql = statement if postgresql is None else postgresql
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._processors: list[Callable[[Any], Any] | None] | None = None
        self._local: dict[tuple[str, ...], _Plan | None] = {}
        """Plans for other databases (SQLite) by parameter names; None: the statement has an
        expanding ``IN``, so it runs through SQLAlchemy."""
        self._local_processors: list[Callable[[Any], Any] | None] | None = None

    def send(self, connection: Connection, params: Mapping[str, Any]) -> PendingRows:
        dialect = connection.dialect
        if dialect.name != "postgresql":
            return self._run_here(connection, params)
        names = tuple(params)
        plan = self._plans.get(names)
        if plan is None:
            plan = _compile(self._postgresql, dialect, names)
            arrays = tuple(
                name
                for name, bind in plan.compiled.binds.items()
                if isinstance(bind.type, ARRAY) and name in params
            )
            plan = self._plans[names] = _binary_arrays(plan, arrays)
        if self._processors is None:
            self._processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self._postgresql.selected_columns
            ]
        cursor = _cursor(connection)
        try:
            with _as_sqlalchemy_errors(dialect, plan.sql, params):
                cursor.execute(plan.sql, plan.row(params))
        except BaseException:
            cursor.close()
            raise
        return PendingRows(cursor=cursor, processors=self._processors, dialect=dialect)

    def _run_here(self, connection: Connection, params: Mapping[str, Any]) -> PendingRows:
        """SQLite: run at once on the driver's cursor (SQLAlchemy's result rows cost more than
        the query for the many rows of a batch's postings), or through SQLAlchemy when the
        statement cannot go to the driver or no transaction has begun yet (the driver's
        cursor would read outside one)."""
        dialect = connection.dialect
        names = tuple(params)
        plan = self._local.get(names, _UNKNOWN)
        if plan is _UNKNOWN:
            try:
                plan = _compile(cast(SelectBase, self._executable), dialect, names)
            except ValueError:
                plan = None
            self._local[names] = plan
        if not isinstance(plan, _Plan) or not connection.in_transaction():
            return PendingRows(
                rows=[tuple(row) for row in connection.execute(self._executable, params)]
            )
        if self._local_processors is None:
            self._local_processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in cast(SelectBase, self._executable).selected_columns
            ]
        cursor = _cursor(connection)
        try:
            with _as_sqlalchemy_errors(dialect, plan.sql, params):
                cursor.execute(plan.sql, plan.row(params))
        except BaseException:
            cursor.close()
            raise
        pending = PendingRows(cursor=cursor, processors=self._local_processors, dialect=dialect)
        pending.all()
        return pending


_UNKNOWN: Any = object()


class PendingRows:
    """The rows of a :meth:`DriverQuery.send`, read when wanted (at most once)."""

    def __init__(
        self,
        *,
        rows: list[tuple[Any, ...]] | None = None,
        cursor: Any = None,
        processors: Sequence[Callable[[Any], Any] | None] = (),
        dialect: Dialect | None = None,
    ) -> None:
        self._rows = rows
        self._cursor = cursor
        self._processors = processors
        self._dialect = dialect

    def close(self) -> None:
        """Leave the rows unread (an error of the query still comes out, at the block's end)."""
        if self._cursor is not None:
            self._cursor.close()
        self._rows = []

    def all(self) -> list[tuple[Any, ...]]:
        if self._rows is not None:
            return self._rows
        cursor, dialect = self._cursor, self._dialect
        assert cursor is not None and dialect is not None
        try:
            with _as_sqlalchemy_errors(dialect):
                fetched: list[tuple[Any, ...]] = cursor.fetchall()
        finally:
            cursor.close()
        processors = self._processors
        if any(process is not None for process in processors):
            fetched = [
                tuple(
                    value if process is None else process(value)
                    for value, process in zip(row, processors, strict=True)
                )
                for row in fetched
            ]
        self._rows = fetched
        return fetched


@contextmanager
def pipelined(connection: Connection, *, commit: Session | None = None) -> Iterator[None]:
    """Send the statements run inside the block without waiting for each (PostgreSQL's
    pipeline mode: one round trip for all, when the block ends); elsewhere, run them as usual.

    :class:`DriverInsert` and :class:`DriverStatement` run inside read no results (a Core
    statement would find none); read a :class:`DriverQuery`'s rows after the block. An error
    of any of them comes out when the block ends (or at a later statement), as SQLAlchemy's
    exception, like theirs.

    ``commit``: commit that session's transaction (``connection``'s) when the block ends
    without error. On PostgreSQL the ``COMMIT`` goes in the same round trip as the block's
    statements (psycopg's own commit inside the block would cost two more: it waits for the
    ``COMMIT``, and leaving pipeline mode waits again).
    """
    dialect = connection.dialect
    if dialect.name != "postgresql":
        yield
        if commit is not None:
            commit.commit()
        return
    driver_connection = connection.connection.driver_connection
    with _as_sqlalchemy_errors(dialect), driver_connection.pipeline():  # type: ignore[union-attr]
        yield
        if commit is not None:
            cursor = _cursor(connection)
            cursor.execute("COMMIT")
            cursor.close()
    if commit is not None:
        # The server has committed; SQLAlchemy's transaction ends without a round trip
        # (psycopg sends no COMMIT outside a transaction).
        commit.commit()


def _run(connection: Connection, sql: str, params: list[Any]) -> None:
    """Run ``sql`` once per parameter set on a cursor of ``connection``'s transaction."""
    dialect = connection.dialect
    cursor = _cursor(connection)
    try:
        with _as_sqlalchemy_errors(dialect, sql, params):
            if len(params) == 1:
                cursor.execute(sql, params[0])
            else:
                cursor.executemany(sql, params)
    finally:
        cursor.close()


@contextmanager
def _as_sqlalchemy_errors(
    dialect: Dialect, sql: str | None = None, params: Any = None
) -> Iterator[None]:
    """The driver's exceptions in the block as SQLAlchemy's (``IntegrityError`` and the
    rest), as ``Connection.execute`` raises them."""
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(
            sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect
        ) from error


def _compile(
    statement: Insert | Update | Delete | SelectBase,
    dialect: Dialect,
    columns: tuple[str, ...],
) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    if not isinstance(compiled, SQLCompiler):  # pragma: no cover - always, for DML
        raise TypeError("a DML statement compiles to SQL")
    if any(bind.expanding for bind in compiled.binds.values()):
        raise ValueError("the driver takes no expanding IN; bind an array instead")
    needs_python = [column.key for column in [*compiled.insert_prefetch, *compiled.update_prefetch]]
    if needs_python:
        raise ValueError(
            f"{getattr(statement, 'table', statement)}: give the columns SQLAlchemy would fill in "
            f"({', '.join(needs_python)}); the driver runs plain statements"
        )
    processors = []
    for bind in compiled.binds.values():
        name = compiled.bind_names[bind]  # as rendered (an anonymous literal's key is not)
        bind_type = bind.type
        if isinstance(bind_type, ARRAY):
            # A column's values as one array: convert each value as the column's type would.
            # (ARRAY's own conversion would take a value that is a sequence, such as a JSON
            # list or a features tuple, for a further dimension of the array.)
            item = bind_type.item_type.dialect_impl(dialect).bind_processor(dialect)
            if item is not None:
                processors.append((name, _each(item)))
            continue
        process = bind_type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((name, process))
    order = compiled.positiontup
    positional = tuple(order) if compiled.positional and order is not None else None
    direct = None
    if positional is not None and set(positional) == set(columns):
        converting = dict(processors)
        direct = tuple(
            (position, converting[name])
            for position, name in enumerate(positional)
            if name in converting
        )
    return _Plan(compiled.string, positional, tuple(processors), compiled, direct)


def _binary_arrays(plan: _Plan, columns: tuple[str, ...]) -> _Plan:
    """``plan`` (an ``unnest`` insert on psycopg) with its arrays sent in binary: psycopg
    writes an array as text in Python, escaping every item with a regular expression (over
    half of a PostgreSQL import's client time, measured); the binary form packs the items
    without quoting, about 17 times faster for the same rows."""
    sql = plan.sql
    for name in columns:
        placeholder = f"%({name})s"
        if sql.count(placeholder) != 1:  # (an unexpected rendering: keep the text form)
            return plan
        sql = sql.replace(placeholder, f"%({name})b")
    return replace(plan, sql=sql)


def _each(process: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    return lambda values: [process(value) for value in values]
