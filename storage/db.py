"""Engines and sessions: one engine per process, one transaction per unit of work.

The application builds the engine once (``gateway/app.py``) and passes it
down (STYLE.md section 2, ``db.py``; the contrast is an engine per request).
Two databases are supported (ARCHITECTURE.md, scale-out):

* SQLite for a single node: WAL journal, ``synchronous=FULL``, foreign keys
  on and a 5 s busy timeout on every connection. Every write transaction
  starts with ``BEGIN IMMEDIATE``, so writers queue for the file lock at the
  start instead of failing half-way when a read turns into a write.
  Read-only sessions (``session_scope(engine, readonly=True)``) use a plain
  deferred ``BEGIN`` and never wait for a writer.
* PostgreSQL for several nodes, through psycopg 3 (``postgresql+psycopg://``),
  at READ COMMITTED; concurrent writers are reconciled row by row with
  ``INSERT ... ON CONFLICT DO NOTHING`` and ``SELECT ... FOR UPDATE``
  (see :mod:`storage.index`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from .errors import StorageError

__all__ = ["BUSY_TIMEOUT_MS", "dialect_of", "make_engine", "read_connection", "session_scope"]

logger = logging.getLogger(__name__)

#: How long an SQLite connection waits for the file lock before failing.
BUSY_TIMEOUT_MS: Final = 5000

#: The execution option that makes an SQLite transaction start deferred.
_READONLY: Final = "storage_readonly"

_SQLITE_PRAGMAS: Final = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)


def make_engine(url: str) -> Engine:
    """Build the process's engine for an SQLite or PostgreSQL URL.

    Parameters
    ----------
    url : str
        ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or
        ``postgresql+psycopg://user:password@host:port/database``
        (ARCHITECTURE.md, configuration; ``config/_checks.py`` accepts the
        same schemes). An SQLite file's parent folder is created.

    Returns
    -------
    sqlalchemy.Engine
        One engine per process; dispose of it at shutdown.

    Raises
    ------
    StorageError
        When the URL cannot be parsed or names another database or driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(
            "database.url: expected sqlite:///PATH or postgresql+psycopg://..., "
            "got a value that is not a URL"
        ) from exc
    if parsed.get_backend_name() == "sqlite" and parsed.get_driver_name() == "pysqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine)
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        engine = create_engine(parsed, pool_pre_ping=True)
    else:
        raise StorageError(
            f"database.url: expected sqlite:// or postgresql+psycopg://, "
            f"got {parsed.drivername}://"
        )
    logger.debug("engine dialect=%s", engine.dialect.name)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Apply the pragmas to each connection and take over BEGIN from the driver.

    pysqlite's own transaction handling starts a transaction lazily before
    the first write, which breaks ``BEGIN IMMEDIATE`` and savepoints; the
    SQLAlchemy documentation's recipe turns it off and emits BEGIN itself.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
            _use_wal(cursor)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL; a switch racing another connection is retried.

    Changing the journal mode needs the file to itself and does not wait
    on the busy timeout, so two processes opening a new database at once
    could fail here; once the file is in WAL mode this is a no-op.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def dialect_of(session: Session) -> str:
    """Return ``"sqlite"`` or ``"postgresql"`` for the session's database."""
    return session.get_bind().dialect.name


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """Run one unit of work in one transaction: commit on success, roll back on error.

    The ingest worker writes index rows, pseudonym map, audit records and
    forward jobs in one such transaction (ARCHITECTURE.md, durability
    contract, point 2).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The engine from :func:`make_engine`.
    readonly : bool
        On SQLite, start the transaction deferred instead of ``BEGIN
        IMMEDIATE``; the session must not write. No effect on PostgreSQL.

    Yields
    ------
    sqlalchemy.orm.Session
        Objects stay readable after the commit (``expire_on_commit=False``).
    """
    bind = engine.execution_options(**{_READONLY: True}) if readonly else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one read-only transaction, for streaming a long query.

    On SQLite the transaction starts deferred (it never waits for a writer,
    and in WAL mode writers never wait for it); on PostgreSQL it is what a
    server-side cursor (``stream_results``) needs. The transaction ends when
    the block does, also when a generator reading from it is closed early.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The engine from :func:`make_engine`.

    Yields
    ------
    sqlalchemy.engine.Connection
        Execute ``SELECT`` statements only.
    """
    bind = engine.execution_options(**{_READONLY: True})
    with bind.connect() as connection, connection.begin():
        yield connection
