"""The audit trail of a whole scenario, in the database and on syslog (SQLite and PostgreSQL).

Issue "audit trail": a store, a query, a move, a forward, a re-identification
and a rejected association each leave their record (who, what, when,
outcome; a store one per sender and study of each ingest batch), with the
PS3.15 A.5.3 event codes on the syslog copy, and no planted PHI token, nor
any original UID, anywhere in either.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

import storage.jobs as jobs
from gateway.forwarder import run_due
from gateway.ingest import run_once
from gateway.node import Node
from storage.audit import list_events
from storage.db import session_scope
from storage.models import AuditOutcome, PeerScope, Study
from storage.records import AuditEvent
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.query_index import add_peer
from tests.retrieve_store import Destination


@pytest.fixture
def destination() -> Iterator[Destination]:
    started = Destination().start()
    yield started
    started.stop()


def _events(node: Node) -> list[AuditEvent]:
    with session_scope(node.app.engine, readonly=True) as session:
        return list_events(session)


def _of(events: list[AuditEvent], name: str) -> list[AuditEvent]:
    return [e for e in events if e.event == name]


def _instances(item: AuditEvent) -> int:
    found = re.search(r"instances=([0-9]+)", item.detail)
    assert found, item.detail
    return int(found.group(1))


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _store(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(dcmread(path)).Status) for path in paths]
    assoc.release()
    return statuses


def _find_and_move(port: int, uid: str) -> tuple[list[int], list[int]]:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        found = [int(s.Status) for s, _ in assoc.send_c_find(
            _identifier(StudyInstanceUID=uid, PatientName=""),
            StudyRootQueryRetrieveInformationModelFind)]
        moved = [int(s.Status) for s, _ in assoc.send_c_move(
            _identifier(StudyInstanceUID=uid), "VIEWERSTORE",
            StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
    return found, moved


def _datagrams(collector: socket.socket, count: int) -> list[str]:
    received: list[str] = []
    while len(received) < count:
        try:
            received.append(collector.recv(65535).decode("ascii"))
        except TimeoutError:
            break
    return received


def test_a_full_scenario_leaves_one_record_for_each_and_no_phi(
    make_node: Callable[..., Node], tmp_path: Path, destination: Destination,
    collector: socket.socket, cli: Callable[..., Result], db_url: str,
) -> None:
    syslog = f"udp://127.0.0.1:{collector.getsockname()[1]}"
    node = make_node(**{"audit.syslog": syslog})
    engine = node.app.engine
    add_peer(engine, "clinic", "CLINIC", ("source",))
    add_peer(engine, "viewer", "VIEWER", ("query", "retrieve"), scope=PeerScope.ALL)
    add_peer(engine, "viewer-store", "VIEWERSTORE", ("destination",), port=destination.port)
    study = make_clinic_study(tmp_path / "study", series=1, per_series=3, jpeg=False)
    originals = {str(dcmread(p).StudyInstanceUID) for p in study.files.values()}
    originals |= {str(dcmread(p).SOPInstanceUID) for p in study.files.values()}

    # store: three instances of one study
    assert _store(node.port, list(study.files.values())) == [0x0000] * 3
    wait_until(lambda: node.app.spool.oldest() is None and bool(_of(_events(node), "store")),
               what="the study indexed")
    with session_scope(engine, readonly=True) as session:
        [uid] = session.scalars(select(Study.study_instance_uid)).all()

    # query and move
    found, moved = _find_and_move(node.port, uid)
    assert found == [0xFF00, 0x0000] and moved[-1] == 0x0000
    assert len(destination.arrived) == 3

    # forward
    with session_scope(engine) as session:
        jobs.enqueue(session, uid, "viewer-store", datetime.now(UTC))
    run_due(node.app)
    wait_until(lambda: bool(_of(_events(node), "forward")), what="the forward audited")

    # re-identify (the command line, on the node's database and data folder)
    result = cli("study", "reidentify", uid, DICOM_GATEWAY_DATABASE__URL=db_url,
                 DICOM_GATEWAY_STORAGE__DATA_DIR=str(node.app.data_dir),
                 DICOM_GATEWAY_AUDIT__SYSLOG=syslog)
    assert result.exit_code == 0, result.output

    # a rejected association: the called AE title is not ours
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assert ae.associate("127.0.0.1", node.port, ae_title="NOTGATEWAY").is_rejected
    wait_until(lambda: bool(_of(_events(node), "association-rejected")),
               what="the rejection audited")

    events = _events(node)
    for name in ("find", "move", "forward", "reidentify", "association-rejected"):
        assert len(_of(events, name)) == 1, (name, [e.event for e in events])
    stores = _of(events, "store")  # one per sender and study of each ingest batch
    assert stores and {(e.actor, e.outcome, e.study_instance_uid) for e in stores} == {
        ("CLINIC", AuditOutcome.SUCCESS, uid)}
    assert all("peer=clinic " in e.detail for e in stores)
    assert sum(_instances(e) for e in stores) == 3
    [find] = _of(events, "find")
    assert (find.actor, find.outcome) == ("VIEWER", AuditOutcome.SUCCESS)
    assert "matches=1" in find.detail
    [move] = _of(events, "move")
    assert move.study_instance_uid == uid and "completed=3" in move.detail
    [forward] = _of(events, "forward")
    assert forward.outcome is AuditOutcome.SUCCESS and forward.study_instance_uid == uid
    assert "destination=viewer-store" in forward.detail and "sent=3" in forward.detail
    [rejected] = _of(events, "association-rejected")
    assert rejected.outcome is AuditOutcome.FAILURE and "address=127.0.0.1" in rejected.detail
    assert rejected.detail.endswith("rj=1,1,7")
    accepted = _of(events, "association-accepted")
    assert {e.actor for e in accepted} >= {"CLINIC", "VIEWER"}
    assert all(e.at.tzinfo is not None for e in events)

    text = "\n".join(f"{e.event} {e.actor} {e.study_instance_uid} {e.detail}" for e in events)
    datagrams = _datagrams(collector, len(events))
    assert len(datagrams) == len(events)
    everything = text + "\n" + "\n".join(datagrams)
    leaked = [t for t in (*study.tokens, *originals) if t in everything]
    assert not leaked, f"the audit trail holds PHI or original UIDs: {leaked}"

    by_event = {m.group(1): line for line in datagrams
                if (m := re.search(r' Event="([^"]+)"', line))}
    assert 'EventID="110104" ' in by_event["store"]
    assert 'EventID="110112" ' in by_event["find"]
    assert 'EventID="110104" ' in by_event["move"]
    assert 'EventID="110110" ' in by_event["reidentify"]
    assert 'EventID="110113" ' in by_event["association-rejected"]
    assert 'EventOutcomeIndicator="4"' in by_event["association-rejected"]


def test_a_batch_stores_one_record_per_sender_and_study(
    make_node: Callable[..., Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.ingest.BATCH_SECONDS", 60.0)  # one batch, however slow
    node = make_node()
    node.workers.stop()  # ingest runs below, in one pass
    first = make_clinic_study(tmp_path / "a", series=2, per_series=4, jpeg=False)
    second = make_clinic_study(tmp_path / "b", series=1, per_series=2, jpeg=False, seed=1)
    paths = [*first.files.values(), *second.files.values()]
    assert _store(node.port, paths) == [0x0000] * 10
    report = run_once(node.app)
    assert report.stored == 10
    stores = _of(_events(node), "store")
    assert len(stores) == 2
    assert sorted(_instances(e) for e in stores) == [2, 8]
    assert len({e.study_instance_uid for e in stores}) == 2


def test_queued_records_keep_their_time_and_are_written_when_the_node_stops(
    make_node: Callable[..., Node],
) -> None:
    node = make_node()
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    before = datetime.now(UTC)
    for _ in range(3):
        assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
        assert assoc.is_established
        assoc.release()
    after = datetime.now(UTC)
    node.stop()  # the writer's last batch is committed before stop returns
    events = _events(node)
    accepted = _of(events, "association-accepted")
    assert len(accepted) == 3
    assert all(before <= e.at <= after for e in accepted)
    assert all("peer=- address=127.0.0.1 roles=source" == e.detail for e in accepted)
    assert [e.event for e in events if e.event.startswith("node-")] == ["node-start", "node-stop"]


def test_an_association_past_the_limit_is_audited_as_rejected(
    make_node: Callable[..., Node],
) -> None:
    node = make_node(**{"limits.max_associations": 1})
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    held = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert held.is_established
    try:
        second = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
        assert second.is_rejected
    finally:
        held.release()
    wait_until(lambda: bool(_of(_events(node), "association-rejected")),
               what="the rejection audited")
    events = _events(node)
    [rejected] = _of(events, "association-rejected")
    assert rejected.actor == "CLINIC" and rejected.outcome is AuditOutcome.FAILURE
    assert rejected.detail.endswith("rj=2,3,2")
    assert len(_of(events, "association-accepted")) == 1  # the rejected one is not also accepted
