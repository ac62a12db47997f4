"""Database fixtures: every database test runs on SQLite and on PostgreSQL.

``db_url`` is parametrized over ``sqlite`` (a file in the test's tmp_path)
and ``postgresql`` (a fresh database per test on the cluster named by
``DICOM_GATEWAY_TEST_POSTGRESQL_URL``, dropped afterwards). Without that
variable the PostgreSQL case fails, it never skips: ``scripts/test`` starts
the cluster and sets it. ``engine`` is an engine on that URL, migrated to
the newest schema. ``instance_record(**overrides)`` builds index records.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from storage.db import make_engine
from storage.records import InstanceRecord
from storage.schema import upgrade

#: The environment variable naming the PostgreSQL cluster for tests.
POSTGRESQL_ENV = "DICOM_GATEWAY_TEST_POSTGRESQL_URL"

NOT_CONFIGURED = (
    "PostgreSQL not configured: run scripts/test (it starts the cluster and sets "
    f"{POSTGRESQL_ENV})"
)


def _postgresql_base() -> str:
    url = os.environ.get(POSTGRESQL_ENV, "")
    if not url:
        pytest.fail(NOT_CONFIGURED, pytrace=False)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of each kind, removed after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'db' / 'gateway.sqlite3').as_posix()}"
        return
    base = make_url(_postgresql_base())
    name = f"gw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            # a connection the test left open warns as it is collected: collected here, the
            # warning fails this test, not whichever test runs when the collector next passes
            gc.collect()
            _drop(admin, name)
    finally:
        admin.dispose()


def _drop(admin: Engine, name: str) -> None:
    """Drop a test database; retried while a server process (autovacuum) is still attached.

    ``WITH (FORCE)`` ends the test's own leftover connections, but the test
    role may not end the server's own workers; a database it cannot drop
    after a few tries is left behind rather than failing the test that used it.
    """
    for attempt in range(10):
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except (OperationalError, ProgrammingError):
            time.sleep(0.2 * (attempt + 1))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url``, migrated with :func:`storage.schema.upgrade`."""
    built = make_engine(db_url)
    try:
        upgrade(built)
        yield built
    finally:
        built.dispose()


def instance_record(**overrides: Any) -> InstanceRecord:
    """An :class:`InstanceRecord` of a CT instance with pseudonymous values.

    Every field can be overridden; UIDs default to fresh ``2.25.`` values.
    """
    values: dict[str, Any] = {
        "patient_id": "PSEUDO-0001",
        "patient_name": "PSEUDO^0001",
        "patient_sex": "O",
        "patient_birth_date": "",
        "study_instance_uid": _uid(),
        "study_date": "20260102",
        "study_time": "101500",
        "accession_number": "ACC-PSEUDO-1",
        "study_id": "SID-PSEUDO-1",
        "study_description": "CT chest",
        "referring_physician_name": "",
        "series_instance_uid": _uid(),
        "modality": "CT",
        "series_number": 1,
        "series_description": "axial",
        "body_part_examined": "CHEST",
        "sop_instance_uid": _uid(),
        "sop_class_uid": CT_IMAGE_STORAGE,
        "instance_number": 1,
        "transfer_syntax_uid": EXPLICIT_VR_LITTLE_ENDIAN,
        "file_path": "00/00/00000000000000000000000000000000.dcm",
        "file_size": 1234,
        "sha256": "0" * 64,
        "received_sha256": "1" * 64,
        "received_at": datetime(2026, 1, 2, 10, 15, tzinfo=UTC),
        "calling_ae_title": "MODALITY1",
        "source_peer": "clinic-a",
    }
    values.update(overrides)
    return InstanceRecord(**values)


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
