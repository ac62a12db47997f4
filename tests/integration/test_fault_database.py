"""The database locked or gone while the node receives and ingests (RELIABILITY T28; I1, I2, I4).

The contract the node follows (ARCHITECTURE, durability contract 1; README
"What happens to a C-STORE"): a C-STORE is acknowledged once its bytes are
durable in the spool, and the database is written only by the ingest
workers afterwards. So a database that fails does not turn an acknowledged
instance into a lost one: the worker puts the entry back and tries again
after a pause, the entry stays in the spool (not quarantined: I2), and it is
indexed once the database is back. What needs the database at association
time, the peer table, is read with a bounded retry; when it stays
unreadable the association is rejected-transient, temporary congestion
(2, 3, 1), never admitted without a decision (gateway/policy.py).

The faults: on SQLite a second writer holding the lock (``BEGIN EXCLUSIVE``
from another connection, longer than the node's busy timeout); on
PostgreSQL the server going away, through a TCP proxy that is cut
(tests/tcpcut.py): the shared cluster is never stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, make_url, select

from gateway.app import build_app
from gateway.node import Node
from gateway.tls import close_transport
from storage.audit import list_events
from storage.db import session_scope
from storage.models import Instance
from storage.quarantine import list_entries
from tests.conftest import TEST_KEY_HEX, node_settings, wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import free_port
from tests.procwatch import watched
from tests.tcpcut import CutProxy

# fault cases that wait out a database outage: run in CI, not in every developer run
pytestmark = pytest.mark.slow


@dataclass
class Outage:
    """The node's database URL, and how to take that database away and give it back."""

    url: str
    cut: Callable[[], None]
    restore: Callable[[], None]
    admits_meanwhile: bool  # whether new associations can still be decided during the outage


@pytest.fixture
def outage(db_url: str) -> Iterator[Outage]:
    if db_url.startswith("sqlite"):
        path = make_url(db_url).database
        assert path is not None
        holder: list[sqlite3.Connection] = []

        def lock() -> None:
            writer = sqlite3.connect(path, timeout=10, isolation_level=None)
            writer.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, every writer waits
            holder.append(writer)

        def unlock() -> None:
            writer = holder.pop()
            writer.execute("ROLLBACK")
            writer.close()

        yield Outage(db_url, lock, unlock, admits_meanwhile=True)
        for writer in holder:
            writer.close()
        return
    url = make_url(db_url)
    with CutProxy(url.host or "127.0.0.1", url.port or 5432, free_port()) as proxy:
        yield Outage(url.set(port=proxy.port).render_as_string(hide_password=False),
                     proxy.cut, proxy.restore, admits_meanwhile=False)


@pytest.fixture
def node(tmp_path: Path, outage: Outage) -> Iterator[Node]:
    settings = node_settings(tmp_path / "node", outage.url, **{"forward.poll_seconds": 3600})
    started = Node(build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX}))
    started.start()
    yield started
    started.stop()
    started.app.close()


def _scu() -> AE:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    return ae


def _indexed(node: Node) -> int:
    with session_scope(node.app.engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_a_database_outage_loses_no_acknowledged_instance(
        node: Node, outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """T28: during the outage a C-STORE on an open association still gets 0x0000 (its bytes
    are durable in the spool, I1) and ingest retries with a pause instead of indexing or
    quarantining it; a new association is decided (SQLite: the peer table is still
    readable) or rejected-transient (2, 3, 1) after the bounded retry (PostgreSQL gone),
    never admitted undecided. Once the database is back, every acknowledged instance is
    indexed and audited, nothing is left in the spool, and the process is back to its
    baseline (I4)."""
    study = make_clinic_study(tmp_path / "study", series=1, per_series=3, jpeg=False)
    first, during, newcomer = (dcmread(path) for path in study.files.values())
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(first).Status) == 0x0000
        wait_until(lambda: _indexed(node) == 1, timeout=15, what="the first instance indexed")
        acknowledged = 1
        with watched(node):
            outage.cut()
            try:
                assert int(assoc.send_c_store(during).Status) == 0x0000
                acknowledged += 1
                wait_until(lambda: "state=retry" in caplog.text, timeout=20,
                           what="ingest failing on the database and putting the entry back")
                other = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")
                if outage.admits_meanwhile:
                    assert other.is_established
                    assert int(other.send_c_store(newcomer).Status) == 0x0000
                    acknowledged += 1
                    other.release()
                else:
                    close_transport(other)  # pynetdicom leaves a rejected one's socket open
                    assert other.is_rejected
                    rejection = other.acceptor.primitive
                    assert rejection is not None
                    assert (rejection.result, rejection.result_source,
                            rejection.diagnostic) == (2, 3, 1)
                assert node.app.spool.oldest() is not None, "the acknowledged entry is kept"
                if outage.admits_meanwhile:  # readable: the entry was not indexed either
                    assert _indexed(node) == 1
            finally:
                outage.restore()
            wait_until(lambda: _indexed(node) == acknowledged
                       and node.app.spool.oldest() is None, timeout=30,
                       what="ingest resuming once the database is back")
    finally:
        assoc.release()
    with session_scope(node.app.engine, readonly=True) as session:
        assert list_entries(session) == []  # retried, not set aside
        stored = list_events(session, event="store")
    assert sum(int(e.detail.split("instances=")[1].split()[0]) for e in stored) == acknowledged
    # the audit records of the outage were kept and written once it ended (I5)
    wanted = ("association-accepted", "peer=-") if outage.admits_meanwhile else (
        "association-rejected", "peer table unavailable")
    wait_until(lambda: len(_audited(node, *wanted)) == 1 + outage.admits_meanwhile,
               timeout=10, what=f"the {wanted[0]} records of the outage")


def _audited(node: Node, event: str, text: str) -> list[str]:
    with session_scope(node.app.engine, readonly=True) as session:
        return [e.detail for e in list_events(session, event=event) if text in e.detail]
