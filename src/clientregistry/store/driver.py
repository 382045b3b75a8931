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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Insert
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
        cursor = connection.connection.cursor()
        try:
            if len(params) == 1:
                cursor.execute(plan.sql, params[0])
            else:
                cursor.executemany(plan.sql, params)
        except dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(
                plan.sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect
            ) from error
        finally:
            cursor.close()

    def _unnest(self, columns: tuple[str, ...]) -> Insert:
        """The statement as ``INSERT … SELECT … FROM unnest(<one array per column>)``
        (PostgreSQL), binding each column's values as one array named after the column."""
        table = self._statement.table
        arrays = [bindparam(name, type_=ARRAY(table.c[name].type)) for name in columns]
        rows = func.unnest(*arrays).table_valued(*columns).render_derived()
        return self._statement.from_select(columns, select(*[rows.c[name] for name in columns]))


def _compile(statement: Insert, dialect: Dialect, columns: tuple[str, ...]) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    if not isinstance(compiled, SQLCompiler):  # pragma: no cover - always, for an insert
        raise TypeError("an INSERT compiles to SQL")
    needs_python = [column.key for column in compiled.insert_prefetch]
    if needs_python:
        raise ValueError(
            f"{statement.table}: give the columns SQLAlchemy would fill in "
            f"({', '.join(needs_python)}); DriverInsert runs plain inserts"
        )
    processors = []
    for name, bind in compiled.binds.items():
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
