"""``dicom-gateway db``: migrate the database and show its revision.

``db upgrade`` migrates to the newest revision and prints it; ``db current``
prints the revision the database is at and exits 1 when that is not the
newest one the code knows (``db upgrade`` fixes that). Neither needs the
de-identification secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import storage_failure
from gateway.errors import GatewayError
from storage.db import make_engine
from storage.errors import StorageError
from storage.schema import current as current_revision
from storage.schema import head
from storage.schema import upgrade as upgrade_schema

__all__ = ["db"]


@click.group()
def db() -> None:
    """Migrate the database and show its schema revision."""


def _engine(app: AppContext) -> Engine:
    try:
        return make_engine(app.settings.database_url)
    except StorageError as exc:
        raise storage_failure(exc) from exc


@contextmanager
def _database(app: AppContext) -> Iterator[Engine]:
    """The engine for the configured database; its failures as one readable line."""
    engine = _engine(app)
    try:
        yield engine
    except StorageError as exc:
        raise storage_failure(exc) from exc
    except SQLAlchemyError as exc:
        raise GatewayError(
            f"database.url: cannot use the database ({exc.__class__.__name__}); "
            "check that it is running and reachable"
        ) from exc
    finally:
        engine.dispose()


@db.command()
@pass_app
@translate_errors
def upgrade(app: AppContext) -> None:
    """Migrate the database to the newest revision and print it."""
    with _database(app) as engine:
        upgrade_schema(engine)
        revision = current_revision(engine)
    click.echo(f"database at revision {revision} (head)")


@db.command()
@pass_app
@translate_errors
def current(app: AppContext) -> None:
    """Print the database's revision; exit 1 when it is not the newest."""
    with _database(app) as engine:
        revision = current_revision(engine)
    newest = head()
    if revision != newest:
        shown = revision or "empty"
        raise GatewayError(
            f"database at revision {shown}, expected {newest}; run: dicom-gateway db upgrade"
        )
    click.echo(f"database at revision {revision} (head)")
