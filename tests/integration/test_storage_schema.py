"""Migrations and engines on SQLite and PostgreSQL: schema = models, upgrades are safe."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from storage.db import make_engine, session_scope
from storage.errors import StorageError
from storage.models import Base
from storage.schema import current, head, upgrade

TABLES = {"patient", "study", "series", "instance", "peer", "pseudonym_map", "audit",
          "quarantine", "route", "route_destination", "forward_job", "forward_item",
          "storage_commitment", "consult_case", "case_uid", "case_result", "node_spool",
          "alembic_version"}


def test_empty_database_has_no_revision(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current(engine) is None
        upgrade(engine)
        assert current(engine) == head() == "0015"
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.execute(text(
            "INSERT INTO audit (at, event, actor, outcome, detail) "
            "VALUES ('2026-01-01 00:00:00+00:00', 'probe', 'test', 'success', '')"
        ))
    upgrade(engine)
    assert current(engine) == head()
    with session_scope(engine) as session:
        assert session.execute(text("SELECT count(*) FROM audit")).scalar_one() == 1


def test_migrated_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_concurrent_upgrades_both_succeed(db_url: str) -> None:
    engines = [make_engine(db_url), make_engine(db_url)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        try:
            barrier.wait()
            upgrade(engine)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert current(engines[0]) == head()
        with engines[0].connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM alembic_version"))
            assert count.scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_connections_are_durable_and_strict(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'db.sqlite3'}")
    try:
        with engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                      for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                          "busy_timeout": 5000}
        assert (tmp_path / "new" / "folder" / "db.sqlite3").exists()
    finally:
        engine.dispose()


def test_sqlite_write_transactions_take_the_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with session_scope(engine) as writer:
                writer.execute(text("SELECT 1"))  # no write yet, but the lock is held
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    probe.execute("BEGIN IMMEDIATE")
                with session_scope(engine, readonly=True) as reader:
                    assert reader.execute(text("SELECT count(*) FROM peer")).scalar_one() == 0
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        finally:
            probe.close()
    finally:
        engine.dispose()


def test_session_scope_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(RuntimeError):
        with session_scope(engine) as session:
            session.execute(text(
                "INSERT INTO audit (at, event, actor, outcome, detail) "
                "VALUES ('2026-01-01 00:00:00+00:00', 'probe', 'test', 'success', '')"
            ))
            raise RuntimeError("boom")
    with session_scope(engine, readonly=True) as session:
        assert session.execute(text("SELECT count(*) FROM audit")).scalar_one() == 0


@pytest.mark.parametrize("url", ["mysql://db/x", "postgresql+psycopg2://u@h/d",
                                 "sqlite+aiosqlite:///x.db", "not a url"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError, match="database.url: expected"):
        make_engine(url)


def test_upgrade_from_0001_keeps_rows_and_fills_what_0002_adds(db_url: str) -> None:
    from alembic import command

    from storage.schema import _config

    engine = make_engine(db_url)
    try:
        cfg = _config()
        with engine.connect() as connection, connection.begin():
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001")
        with session_scope(engine) as session:
            session.execute(text(
                "INSERT INTO patient (patient_id, patient_name, patient_sex, patient_birth_date) "
                "VALUES ('ANON1', 'ANON^Zoë', 'O', '')"))
            session.execute(text(
                "INSERT INTO peer (slug, ae_title, host, port, roles, created_at) "
                "VALUES ('clinic-a', 'CLINICA', '127.0.0.1', 104, 'source', "
                "'2026-01-01 00:00:00+00:00')"))
        upgrade(engine)
        assert current(engine) == head()
        with session_scope(engine, readonly=True) as session:
            assert session.execute(text("SELECT patient_name_folded FROM patient")).scalar_one() \
                == "anon^zoë"
            assert session.execute(text("SELECT scope FROM peer")).scalar_one() == "sent"
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
