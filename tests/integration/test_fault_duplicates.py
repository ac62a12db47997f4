"""Duplicate SOP Instance UIDs through the running node (RELIABILITY T22; I2, I4, I5).

The policy (README, "Duplicates"): the first instance received under a SOP
Instance UID is kept; a later one with the same bytes is acknowledged and
released without another index row or another forward (a repeat costs time,
not data, ARCHITECTURE durability contract 2); a later one with different
bytes, or of a different patient, is acknowledged (its bytes are durable in
the spool, I1) and then quarantined with its reason and an audit record,
never merged into the first one's patient or study. Each case stores over
C-STORE, lets the node's ingest workers run, and forwards through a route to
a recording Storage SCP. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

import storage.jobs as jobs
import storage.routes as routes
from gateway.forwarder import run_due
from gateway.node import Node
from gateway.router import route_stable
from storage import peers
from storage.audit import list_events
from storage.db import session_scope
from storage.models import Instance, Patient, Study
from storage.quarantine import list_entries
from storage.records import PeerRecord
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.procwatch import watched
from tests.retrieve_store import Destination

REASON = "different content under a known SOP Instance UID"


@pytest.fixture
def destination() -> Iterator[Destination]:
    started = Destination().start()
    yield started
    started.stop()


@pytest.fixture
def node(make_node: Callable[..., Node], destination: Destination) -> Node:
    """A node whose clock stays out of the way (the test routes and forwards itself), with a
    route sending every CT study to ``destination``."""
    started = make_node(**{"forward.poll_seconds": 3600, "forward.stable_after_seconds": 1})
    with session_scope(started.app.engine) as session:
        peers.add(session, PeerRecord(slug="institute", ae_title="DESTINATION",
                                      host="127.0.0.1", port=destination.port,
                                      roles=("destination",)))
        routes.add(session, routes.RouteSpec(name="all-ct", destinations=("institute",),
                                             conditions=("ModalitiesInStudy=CT",)))
    return started


@pytest.fixture
def original(tmp_path: Path) -> Dataset:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    return dcmread(next(iter(study.files.values())))


def _store(node: Node, ds: Dataset) -> int:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def _count(node: Node, model: type) -> int:
    with session_scope(node.app.engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _ingested(node: Node) -> None:
    """Nothing waits in the spool or is being ingested (its oldest entry is gone)."""
    wait_until(lambda: node.app.spool.oldest() is None, timeout=15, what="the spool drained")


def _forward_due(node: Node) -> None:
    """What the node's clock does at each firing, now and deterministically."""
    later = datetime.now(UTC) + timedelta(seconds=5)  # past stable_after_seconds
    route_stable(node.app, later)
    run_due(node.app, now=later)


def _jobs(node: Node) -> list[jobs.JobRecord]:
    with session_scope(node.app.engine, readonly=True) as session:
        return jobs.list_jobs(session)


def _received_sha(node: Node) -> str:
    with session_scope(node.app.engine, readonly=True) as session:
        return str(session.scalars(select(Instance.received_sha256)).one())


def test_the_same_bytes_again_are_acknowledged_and_not_forwarded_twice(
        node: Node, original: Dataset, destination: Destination) -> None:
    """T22 (a): the repeat gets 0x0000, adds no row, no job and no second delivery."""
    assert _store(node, original) == 0x0000
    _ingested(node)
    _forward_due(node)
    assert len(destination.arrived) == 1
    first_sha = _received_sha(node)
    with watched(node):
        assert _store(node, original) == 0x0000
        _ingested(node)
        _forward_due(node)
    assert len(destination.arrived) == 1
    assert _count(node, Instance) == 1 and _received_sha(node) == first_sha
    assert [(job.state.value, job.sent) for job in _jobs(node)] == [("done", 1)]
    with session_scope(node.app.engine, readonly=True) as session:
        assert list_entries(session) == []


@pytest.mark.parametrize("change", ["content", "patient"])
def test_different_content_under_a_known_uid_is_quarantined_audited_never_merged(
        node: Node, original: Dataset, destination: Destination, change: str) -> None:
    """T22 (b): keep-first. The second instance under the same SOP Instance UID, with
    another description or of another patient, is acknowledged (durable, I1), then
    quarantined with its reason and a ``quarantine`` audit record (I2, I5); the index
    keeps the first one's bytes, patient and study, and nothing more is forwarded."""
    assert _store(node, original) == 0x0000
    _ingested(node)
    _forward_due(node)
    assert len(destination.arrived) == 1
    first_sha = _received_sha(node)
    second = original.copy()
    if change == "patient":
        second.PatientID = "OTHER-PATIENT-7"
        second.PatientName = "Other^Patient"
    else:
        second.SeriesDescription = "changed after the first send"
    with watched(node):
        assert _store(node, second) == 0x0000
        _ingested(node)
        _forward_due(node)
    with session_scope(node.app.engine, readonly=True) as session:
        [held] = list_entries(session)
        [audited] = list_events(session, event="quarantine")
    assert held.reason == REASON and held.calling_ae_title == "CLINIC"
    assert held.sop_instance_uid == destination.arrived[0].sop  # the remapped UID
    assert audited.actor == "CLINIC" and audited.outcome.value == "failure"
    assert REASON in audited.detail
    assert (_count(node, Instance), _count(node, Study), _count(node, Patient)) == (1, 1, 1)
    assert _received_sha(node) == first_sha
    assert len(destination.arrived) == 1
    assert [(job.state.value, job.sent) for job in _jobs(node)] == [("done", 1)]
    # the quarantined file is kept for a person to look at, not dropped (I2)
    assert len(list(node.app.spool.quarantined.rglob("*.dcm"))) >= 1
    for text in ("OTHER-PATIENT-7", "Other^Patient"):
        assert text not in audited.detail and text not in held.reason
