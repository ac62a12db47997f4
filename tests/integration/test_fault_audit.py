"""Refusals of the fault catalogue and their audit records (RELIABILITY T01, T02, T11, T24; I5).

Each case drives the running node (a raw peer or a pynetdicom SCU), asserts
what the table expects on the wire, then the ``audit`` row in the database
and its RFC 5424 copy on a syslog collector, shaped after PS3.15 A.5:
rejected associations and refused moves are Security Alerts (EventID 110113,
EventTypeCode 110126 Node Authentication or 110132 Use of Restricted
Function), a refused store an Instances Transferred (110104) failure; every
one with EventOutcomeIndicator 4 (minor failure), never a value the peer
sent in place of a UID. The process's RSS, threads and open descriptors come
back to their baseline after each fault (I4, tests/procwatch.py). SQLite and
PostgreSQL.
"""

from __future__ import annotations

import re
import socket
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom.config
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore

from gateway.node import Node
from storage import peers
from storage.audit import list_events
from storage.db import session_scope
from storage.models import PeerScope
from storage.records import AuditEvent, PeerRecord
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.procwatch import close_idle_connections, watched
from tests.query_index import add_peer
from tests.rawpeer import (
    FAST,
    IMPLICIT_LE,
    RawPeer,
    Reply,
    associate_rq,
    closed_within,
    dimse_status,
    echo_works,
    release_rq,
)
from tests.rawpeer import _pdata as pdata_pdus

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: 65 characters: one more than PS3.5 9.1 allows
UID_65 = "1.2." + "3" * 61


@pytest.fixture
def node(make_node: Callable[..., Node], collector: socket.socket) -> Node:
    """A node with one-second timeouts and its audit copy sent to ``collector``."""
    started = make_node(**FAST, **{"audit.syslog":
                                   f"udp://127.0.0.1:{collector.getsockname()[1]}"})
    # warmed up before any baseline is taken; under load the first association can outlast
    # the one-second timeouts (tests.rawpeer.warmed_up)
    wait_until(lambda: echo_works(started.port), timeout=20, what="a first echo answered")
    _admissions_written(started, 1)
    return started


def _admissions_written(node: Node, count: int) -> None:
    """Wait for the queued ``association-accepted`` records (gateway.audittrail.AuditWriter):
    the watch empties the database pool at its end, which must not race the writer."""
    wait_until(lambda: len(_events(node, "association-accepted")) >= count, timeout=5,
               what=f"{count} admissions audited")


def _events(node: Node, event: str) -> list[AuditEvent]:
    with session_scope(node.app.engine, readonly=True) as session:
        return list_events(session, event=event)


def _syslog(collector: socket.socket, event: str) -> str:
    """The first datagram the collector gets about ``event`` (earlier ones are skipped)."""
    while True:
        line = collector.recv(65535).decode("ascii")
        if f'Event="{event}"' in line:
            return line


def _params(line: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line))


def _assert_alert(line: str, actor: str, event_type: str) -> None:
    params = _params(line)
    assert (params["EventID"], params["EventIDDisplay"]) == ("110113", "Security Alert")
    assert params["EventTypeCode"] == event_type
    assert params["EventOutcomeIndicator"] == "4" and params["UserID"] == actor


# -- T01: called AE title not ours -------------------------------------------------------

def test_a_called_ae_mismatch_is_rejected_and_audited_as_a_security_alert(
        node: Node, collector: socket.socket) -> None:
    """T01, PS3.8 Table 9-21: called AE title not recognised, RJ (1, 1, 7); no DIMSE served;
    an ``association-rejected`` record and a Security Alert (110113, 110126)."""
    with watched(node):
        with RawPeer(node.port) as peer:
            peer.send(associate_rq(calling="CLINIC", called="NOTUS"))
            replies = closed_within(peer, 5)
        assert [r.rejection for r in replies] == [(1, 1, 7)]
    [rejected] = _events(node, "association-rejected")
    assert (rejected.actor, rejected.outcome.value) == ("CLINIC", "failure")
    assert "called AE title is not ours" in rejected.detail and "rj=1,1,7" in rejected.detail
    _assert_alert(_syslog(collector, "association-rejected"), "CLINIC", "110126")


# -- T02: a registered AE title from an address it is not registered at -------------------

def test_a_registered_ae_title_from_another_address_is_rejected_and_audited(
        node: Node, collector: socket.socket) -> None:
    """T02: a peer pinned to an address (``peer add --pin-address``) is refused from any
    other one with RJ (1, 1, 3), calling AE title not recognised, and audited; the same
    peer pinned to the address it comes from is admitted. The peer's ``host`` is where
    the node sends to; only the pinned address is checked on the way in (gateway/policy)."""
    with session_scope(node.app.engine) as session:
        peers.add(session, PeerRecord(slug="clinic", ae_title="CLINIC", host="192.0.2.10",
                                      port=104, roles=("source",),
                                      pinned_address="192.0.2.10"))
    with watched(node):
        with RawPeer(node.port) as peer:  # from 127.0.0.1
            peer.send(associate_rq(calling="CLINIC"))
            replies = closed_within(peer, 5)
        assert [r.rejection for r in replies] == [(1, 1, 3)]
    [rejected] = _events(node, "association-rejected")
    assert rejected.actor == "CLINIC"
    assert "registered for another address" in rejected.detail
    assert "address=127.0.0.1" in rejected.detail and "rj=1,1,3" in rejected.detail
    _assert_alert(_syslog(collector, "association-rejected"), "CLINIC", "110126")

    with session_scope(node.app.engine) as session:
        peers.update(session, "clinic", pinned_address="127.0.0.1")
    assert echo_works(node.port)  # CLINIC from its pinned address
    wait_until(lambda: any("peer=clinic" in e.detail
                           for e in _events(node, "association-accepted")),
               timeout=5, what="the admission audited")


# -- T11: a 65-character UID --------------------------------------------------------------

def _store_pdus(ds: Dataset, encoded: bytes, command_uid: str) -> list[bytes]:
    """A C-STORE-RQ whose Affected SOP Instance UID is ``command_uid`` as given.

    pynetdicom refuses to encode a non-conformant UID, so the command is built with a
    valid one, which is then replaced and its group length recomputed (PS3.7 6.3.1).
    """
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = "1.2.3"
    primitive.Priority = 2
    primitive.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = message.command_set
    with pydicom.config.disable_value_validation():
        command.AffectedSOPInstanceUID = command_uid
        del command.CommandGroupLength
        command.CommandGroupLength = len(encode(command, True, True) or b"")
        return pdata_pdus(message.encode_msg(1, 16382))


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# pydicom warns about the over-long UI value as the node decodes it (an error under this
# suite's filterwarnings, which would end the node's thread instead of what it does in service)
@pytest.mark.filterwarnings("ignore:The value length \\(65\\):UserWarning")
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
@pytest.mark.parametrize("where", ["command", "dataset"])
def test_a_65_character_uid_is_refused_writes_nothing_and_is_audited(
        node: Node, collector: socket.socket, tmp_path: Path, where: str) -> None:
    """T11, PS3.5 9.1 (a UID has at most 64 characters), I3, I5: in the command's Affected
    SOP Instance UID (PS3.7 9.3.1.1) pynetdicom cannot decode the request and the
    association is aborted; in the dataset (the command's UID valid) the C-STORE gets
    0xA900. Either way nothing is spooled or written, and a ``store-refused`` record
    names the rule, never the value."""
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        if where == "dataset":
            ds.SOPInstanceUID = UID_65
        encoded = encode(ds, True, True)
    assert encoded is not None
    pdus = _store_pdus(ds, encoded, UID_65 if where == "command" else "1.2.3")
    # SQLite's -wal/-shm go, as watched() does at the end; the pool itself stays (a dispose
    # would strand a connection the audit writer holds, open until the collector finds it)
    close_idle_connections(node.app.engine)
    before = _files_under(tmp_path) - _files_under(node.app.data_dir)
    with watched(node):
        with RawPeer(node.port) as peer:
            peer.send(associate_rq(((1, CT_IMAGE, (IMPLICIT_LE,)),)))
            assert getattr(peer.receive(), "context_results", None) == {1: 0}
            peer.send(*pdus)
            reply = peer.receive()
            if where == "command":
                assert isinstance(reply, Reply) and reply.pdu_type == 0x07  # A-ABORT
            else:
                assert dimse_status(reply) == 0xA900
                peer.send(release_rq())
            closed_within(peer, 5)
        wait_until(lambda: not any(node.receiving_dir.iterdir()), timeout=5,
                   what="no received file left")
        _admissions_written(node, 2)
    assert node.app.spool.depth() == 0
    assert _files_under(tmp_path) - _files_under(node.app.data_dir) == before
    [refused] = _events(node, "store-refused")
    assert refused.actor == "CLINIC" and refused.outcome.value == "failure"
    expected = ("malformed AffectedSOPInstanceUID in the command" if where == "command"
                else "status=0xA900 reason=SOP Class or Instance UID malformed")
    assert expected in refused.detail
    line = _syslog(collector, "store-refused")
    assert _params(line)["EventID"] == "110104" and _params(line)["EventOutcomeIndicator"] == "4"
    assert UID_65 not in line and UID_65 not in refused.detail
    assert echo_works(node.port)


# -- T24: refused C-MOVE destinations -----------------------------------------------------

def _move(port: int, destination: str, ae_title: str) -> list[int]:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = "2.25.2001"
    try:
        return [int(status.Status) for status, _ in assoc.send_c_move(
            identifier, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


@pytest.mark.parametrize(("caller", "destination", "status", "reason"), [
    ("SPECIALIST", "NOWHERE", 0xA801, "move destination unknown"),
    ("CLINICA", "INSTITUTE", 0xC801, "not allowed"),
], ids=["unknown-destination", "not-allowed-for-this-caller"])
def test_a_refused_move_is_audited_as_a_security_alert(
        node: Node, collector: socket.socket, caller: str, destination: str, status: int,
        reason: str) -> None:
    """T24, PS3.4 C.4.2.1.5: an unknown Move Destination gets 0xA801, a known one the
    caller may not use 0xC801; nothing is sent, and each leaves a ``move-refused`` record
    with the caller as actor and a Security Alert (110113, 110132 Use of Restricted
    Function) on syslog. The destination's address only ever comes from the peer table."""
    engine = node.app.engine
    add_peer(engine, "specialist", "SPECIALIST", ("query", "retrieve"), PeerScope.ALL)
    add_peer(engine, "clinic-a", "CLINICA", ("source", "retrieve", "destination"),
             PeerScope.SENT)
    with session_scope(engine) as session:  # a third party's machine
        peers.add(session, PeerRecord(slug="institute", ae_title="INSTITUTE", host="127.0.0.2",
                                      port=104, roles=("destination",)))
    with watched(node):
        assert _move(node.port, destination, caller) == [status]
        _admissions_written(node, 2)
    [refused] = _events(node, "move-refused")
    assert refused.actor == caller and refused.outcome.value == "failure"
    assert reason in refused.detail
    _assert_alert(_syslog(collector, "move-refused"), caller, "110132")
    assert _events(node, "move") == []
