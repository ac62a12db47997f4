"""Schema versions: bring a database to the newest migration, or say where it is.

Alembic runs from code, not from an ``alembic.ini``: the script location is
the ``storage.migrations`` package, so it works from a checkout and when
installed. ``dicom-gateway db upgrade`` and ``db current`` call these.

Several processes may upgrade the same database at once (N nodes starting
together, ARCHITECTURE.md scale-out). On PostgreSQL the whole upgrade runs
in one transaction that first takes a transaction-level advisory lock, so
the others wait and then find the schema current. On SQLite the upgrade's
transaction starts with ``BEGIN IMMEDIATE`` (:mod:`storage.db`), which holds
the file's write lock for the same effect.
"""

from __future__ import annotations

import logging
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

__all__ = ["MIGRATION_LOCK_KEY", "current", "head", "upgrade"]

logger = logging.getLogger(__name__)

#: The PostgreSQL advisory lock key serializing upgrades (an arbitrary constant).
MIGRATION_LOCK_KEY: Final = 0x44474D31  # "DGM1"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    cfg.set_main_option("path_separator", "os")
    return cfg


def head() -> str:
    """Return the newest revision the code knows (``"0001"``, ...).

    Returns
    -------
    str
        The single head of ``storage/migrations/versions``.
    """
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {sorted(heads)}")
    return heads[0]


def upgrade(engine: Engine) -> None:
    """Migrate the database to :func:`head`; a current database is left alone.

    Safe when several processes call it at once (see the module notes).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The engine from :func:`storage.db.make_engine`.
    """
    cfg = _config()
    with engine.connect() as connection:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = MigrationContext.configure(connection).get_current_revision()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        logger.info("schema upgrade from=%s to=%s", before or "empty", after)


def current(engine: Engine) -> str | None:
    """Return the revision the database is at, or ``None`` for an empty database.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The engine from :func:`storage.db.make_engine`.

    Returns
    -------
    str | None
        For example ``"0001"``; compare with :func:`head`.
    """
    with engine.connect().execution_options(storage_readonly=True) as connection:
        return MigrationContext.configure(connection).get_current_revision()
