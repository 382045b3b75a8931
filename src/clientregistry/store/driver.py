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
rebound per row, all in C); on PostgreSQL, where ``executemany`` runs a statement per row,
they go through Core, which sends them as one multi-row ``INSERT``.

Only plain inserts qualify: every column without a server-side default must be given (a
statement that would need SQLAlchemy to fill in a Python-side default is refused when it is
compiled), and nothing is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
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
        if len(batch) > 1 and not dialect.positional:
            # PostgreSQL: Core sends the rows as one multi-row INSERT ("insertmanyvalues");
            # the driver's executemany would run one statement per row.
            connection.execute(self._statement, batch)
            return
        columns = tuple(batch[0])
        plan = self._plans.get((dialect.name, columns))
        if plan is None:
            plan = self._plans[(dialect.name, columns)] = self._compile(dialect, columns)
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

    def _compile(self, dialect: Dialect, columns: tuple[str, ...]) -> _Plan:
        compiled = self._statement.compile(dialect=dialect, column_keys=list(columns))
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - always, for an insert
            raise TypeError("an INSERT compiles to SQL")
        needs_python = [column.key for column in compiled.insert_prefetch]
        if needs_python:
            raise ValueError(
                f"{self._statement.table}: give the columns SQLAlchemy would fill in "
                f"({', '.join(needs_python)}); DriverInsert runs plain inserts"
            )
        processors = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((name, process))
        order = compiled.positiontup
        positional = tuple(order) if compiled.positional and order is not None else None
        return _Plan(compiled.string, positional, tuple(processors), compiled)
