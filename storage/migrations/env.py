"""Alembic environment: migrations run only through :func:`storage.schema.upgrade`.

There is no ``alembic.ini``: :mod:`storage.schema` builds the configuration in
code and hands over an open connection with its transaction already begun
(and, on PostgreSQL, an advisory lock held), so this module neither reads a
URL nor configures logging. SQLite gets batch mode (``render_as_batch``),
because it cannot alter most of a table in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported; use storage.schema")
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through storage.schema.upgrade(engine)")
    _run(connection)


_main()
