"""Integer parameters of the routes, bounded by what the database can hold.

An integer the database's column cannot hold (PostgreSQL's ``bigint`` stops at 2^63-1, its
``integer`` at 2^31-1; SQLite's driver refuses more than 2^63-1) would reach the query and fail
there (500). Bounded here, it is 400 (``{"detail": …}`` on ``/admin``, an OperationOutcome on
``/fhir``) naming the parameter, the same on both databases.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1

RowId = Annotated[int, Path(ge=0, le=MAX_BIGINT, description="A row's id")]
"""The id of an audit event, review item, job or rules version (``bigint``)."""
Version = Annotated[int, Path(ge=0, le=MAX_INTEGER, description="A version number")]
"""A record's version number (``integer``)."""
Offset = Annotated[int, Query(ge=0, le=MAX_INTEGER, description="Items to skip")]
"""How many items of a list to skip."""
