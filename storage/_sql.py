"""Statements that differ between SQLite and PostgreSQL, written once.

``INSERT ... ON CONFLICT DO NOTHING`` is how concurrent writers create the
same row without failing (ARCHITECTURE.md, scale-out): on PostgreSQL the
second insert waits for the first transaction and then does nothing, and a
following ``SELECT`` at READ COMMITTED sees the committed row. SQLite has
the same syntax (3.24+) and ``RETURNING`` (3.35+).

:func:`stream_postgresql` reads a long result from PostgreSQL as the server
sends it, with psycopg's ``Cursor.stream`` (libpq's chunked rows, or single
rows before libpq 17) in autocommit: one statement and one round trip.
SQLAlchemy's streaming (``yield_per``) declares a server-side cursor
instead: BEGIN, DECLARE, a FETCH per batch, CLOSE and COMMIT, each a round
trip, and a plan made for the first tenth of the rows. The server blocks
once the socket is full, so memory stays bounded however slowly rows are
read; closing the generator early cancels the query and drains what was
already sent, leaving the connection clean for the pool.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import dialect_of
from .errors import StorageError

__all__ = ["insert_ignore", "stream_postgresql", "table_of"]

#: The libpq version from which psycopg streams rows in chunks instead of one by one.
_CHUNKED_LIBPQ = 170000


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


def _plain(value: Any) -> Any:
    """A bound value as psycopg adapts it: an Enum (a state) by its value."""
    return value.value if isinstance(value, enum.Enum) else value


def stream_postgresql(connection: Connection, statement: Select[Any], size: int
                      ) -> Iterator[dict[str, Any]]:
    """Yield the rows of ``statement`` as PostgreSQL sends them (see the module notes).

    Parameters
    ----------
    connection : sqlalchemy.Connection
        A PostgreSQL connection in autocommit (``isolation_level="AUTOCOMMIT"``)
        on which no transaction has begun.
    statement : sqlalchemy.Select
        A SELECT whose bound values are text, numbers or Enums.
    size : int
        Rows per chunk from the server.

    Yields
    ------
    dict[str, Any]
        Column label -> value.

    Raises
    ------
    StorageError
        When the database fails; the message names the error's class only.
    """
    import psycopg  # only PostgreSQL nodes have it

    compiled = statement.compile(dialect=connection.dialect,
                                 compile_kwargs={"render_postcompile": True})
    params = {name: _plain(value) for name, value in compiled.construct_params().items()}
    chunk = size if psycopg.pq.version() >= _CHUNKED_LIBPQ else 1
    driver = connection.connection.driver_connection
    if driver is None:
        raise StorageError("the index connection is closed")
    try:
        with driver.cursor() as cursor:
            names: list[str] | None = None
            for row in cursor.stream(compiled.string, params, size=chunk):
                if names is None:
                    names = [column.name for column in cursor.description or ()]
                yield dict(zip(names, row))
    except psycopg.Error as exc:
        raise StorageError(f"the index query failed: {exc.__class__.__name__}") from exc
