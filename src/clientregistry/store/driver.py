"""Prebuilt ``INSERT`` statements run straight on the database driver: the hot path's writes.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Delete, Insert, Update
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    positional: tuple[str, ...] | None
    """Bind names in the order of the driver's ``?`` placeholders; None for named styles."""
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    compiled: SQLCompiler

    def row(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for one row: a tuple (``?`` style) or a mapping."""
        params = self.compiled.construct_params(dict(values))
        for name, process in self.processors:
            params[name] = process(params[name])
        if self.positional is None:
            return params
        return tuple(params[name] for name in self.positional)


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
        key = (dialect.name + ("[]" if arrays else ""), columns)
        plan = self._plans.get(key)
        if plan is None:
            statement = self._unnest(columns) if arrays else self._statement
            plan = self._plans[key] = _compile(statement, dialect, columns)
        if arrays:
            params = [plan.row({name: [row[name] for row in batch] for name in columns})]
        else:
            params = [plan.row(row) for row in batch]
        _run(connection, plan.sql, params)

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


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """Send the statements run inside the block without waiting for each (PostgreSQL's
    pipeline mode, one round trip for all); elsewhere, run them as usual.

    Only :class:`DriverInsert` and :class:`DriverStatement` may run inside: they read no
    results (a Core statement would find none). An error of any of them comes out when the
    block ends (or at a later statement), as SQLAlchemy's exception, like theirs.
    """
    dialect = connection.dialect
    if dialect.name != "postgresql":
        yield
        return
    driver_connection = connection.connection.driver_connection
    try:
        with driver_connection.pipeline():  # type: ignore[union-attr]
            yield
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(
            None, None, error, dialect.loaded_dbapi.Error, dialect=dialect
        ) from error


def _run(connection: Connection, sql: str, params: list[Any]) -> None:
    """Run ``sql`` once per parameter set on a cursor of ``connection``'s transaction."""
    dialect = connection.dialect
    cursor = connection.connection.cursor()
    try:
        if len(params) == 1:
            cursor.execute(sql, params[0])
        else:
            cursor.executemany(sql, params)
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(
            sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect
        ) from error
    finally:
        cursor.close()


def _compile(
    statement: Insert | Update | Delete, dialect: Dialect, columns: tuple[str, ...]
) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    if not isinstance(compiled, SQLCompiler):  # pragma: no cover - always, for DML
        raise TypeError("a DML statement compiles to SQL")
    needs_python = [column.key for column in [*compiled.insert_prefetch, *compiled.update_prefetch]]
    if needs_python:
        raise ValueError(
            f"{statement.table}: give the columns SQLAlchemy would fill in "
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
    return _Plan(compiled.string, positional, tuple(processors), compiled)


def _each(process: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    return lambda values: [process(value) for value in values]
