"""Statements that differ between SQLite and PostgreSQL, written once.

``INSERT ... ON CONFLICT DO NOTHING`` is how concurrent writers create the
same row without failing (ARCHITECTURE.md, scale-out): on PostgreSQL the
second insert waits for the first transaction and then does nothing, and a
following ``SELECT`` at READ COMMITTED sees the committed row. SQLite has
the same syntax (3.24+) and ``RETURNING`` (3.35+).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import dialect_of
from .errors import StorageError

__all__ = ["insert_ignore", "table_of"]


def table_of(model: type[Any]) -> Table:
    """Return the ``Table`` of a mapped class."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def insert_ignore(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Sequence[str],
) -> list[int]:
    """Insert ``rows``, skipping any that collide on ``conflict_columns``.

    Parameters
    ----------
    session : Session
        The caller's session; the statement runs in its transaction.
    table : Table
        A table with an integer ``id`` primary key.
    rows : Sequence[Mapping[str, Any]]
        Column values, one mapping per row; all with the same keys.
    conflict_columns : Sequence[str]
        The columns of a unique constraint of ``table``.

    Returns
    -------
    list[int]
        The ids of the rows actually inserted (empty when all existed).
    """
    if not rows:
        return []
    statement = _insert_ignore(dialect_of(session), table, tuple(conflict_columns))
    values = [dict(row) for row in rows]
    # one statement object per (table, columns): compiled once, then taken from
    # SQLAlchemy's statement cache; several rows go as one "insertmanyvalues" batch
    result = session.execute(statement, values[0] if len(values) == 1 else values)
    return [int(value) for value in result.scalars()]


@functools.cache
def _insert_ignore(dialect: str, table: Table, keys: tuple[str, ...]) -> Any:
    if dialect == "postgresql":
        return (postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
                .returning(table.c.id))
    if dialect == "sqlite":
        return (sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
                .returning(table.c.id))
    raise StorageError(f"unsupported database {dialect!r}: expected sqlite or postgresql")
