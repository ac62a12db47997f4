"""The query benchmark's databases: a fresh SQLite file, or a fresh PostgreSQL bench database.

PostgreSQL: the cluster and role are those of the tests
(``DICOM_GATEWAY_TEST_POSTGRESQL_URL``, which ``scripts/test`` exports;
its default otherwise), the database is ``dicom_gateway_bench``, apart from
the tests' own. When the cluster is down it is started (as root, with
``pg_ctlcluster``, as ``scripts/test`` does); when the database is missing
it is made, owned by the test role (as root through ``su postgres -c
psql``, otherwise by the role, which may create databases). Each run
empties its ``public`` schema and migrates it afresh, so nothing of an
earlier run or an earlier schema survives. After the bulk load the tables
are ``ANALYZE``d, which autovacuum would do by itself shortly after such a
load; SQLite gets nothing the node would not do itself.
"""

from __future__ import annotations

import os
import subprocess
from typing import Final

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from scripts.benchmarks.query_corpus import Corpus, index_counts, load_index
from storage.db import make_engine
from storage.schema import upgrade

DEFAULT_URL: Final = ("postgresql+psycopg://dicom_gateway_test:dicom_gateway_test"
                      "@127.0.0.1:5432/dicom_gateway_test")
BENCH_DATABASE: Final = "dicom_gateway_bench"


def _cluster() -> tuple[str, str] | None:
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                            check=False).stdout.split()
    return (listed[0], listed[1]) if len(listed) >= 2 else None


def _is_root() -> bool:
    return os.geteuid() == 0


def postgresql_bench_url() -> str:
    """The bench database's URL; the cluster started and the database made when needed."""
    base = make_url(os.environ.get("DICOM_GATEWAY_TEST_POSTGRESQL_URL") or DEFAULT_URL)
    admin = create_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        try:
            connection = admin.connect()
        except OperationalError:
            cluster = _cluster()
            if cluster is None or not _is_root():
                raise RuntimeError(
                    f"PostgreSQL at {base.host}:{base.port} does not answer; start it as root: "
                    "pg_ctlcluster 15 main start") from None
            subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
            connection = admin.connect()
        with connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                        {"name": BENCH_DATABASE}).first()
            if exists is None:
                if _is_root():
                    subprocess.run(
                        ["su", "postgres", "-c", f"psql -q -p {base.port or 5432} -v "
                         f"ON_ERROR_STOP=1 -c 'CREATE DATABASE {BENCH_DATABASE} OWNER "
                         f"{base.username}'"], check=True, cwd="/")
                else:
                    connection.execute(text(f"CREATE DATABASE {BENCH_DATABASE}"))
    finally:
        admin.dispose()
    return base.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def empty_schema(url: str) -> None:
    """Drop everything in the PostgreSQL database's ``public`` schema (an earlier run's)."""
    with create_engine(url, poolclass=NullPool).begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))


def prepare(url: str, corpus: Corpus) -> dict[str, int]:
    """An empty index at ``url``, migrated and loaded with ``corpus``; its counts."""
    if url.startswith("postgresql"):
        empty_schema(url)
    engine = make_engine(url)
    try:
        upgrade(engine)
        load_index(engine, corpus)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE"))
        return index_counts(engine)
    finally:
        engine.dispose()
