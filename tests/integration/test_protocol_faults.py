"""Bad PDUs at the DICOM port (RELIABILITY T03-T08, T13, T25), sent by a raw peer
(tests/rawpeer.py).

Each case sends hand-built bytes (PS3.8 9.3), asserts what the node answers
(A-ASSOCIATE-RJ with its result/source/reason, an A-ABORT, or a closed
connection, PS3.8 9.2 state table), then that the node still answers a
normal C-ECHO and that its threads and open file descriptors come back to
what they were before (I4). Timeouts are set to one second so that the
cases that wait on them run in seconds. A cut mid-C-STORE (T25) is followed
through to forwarding: what was acknowledged reaches a destination once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ

from sqlalchemy import func, select

from gateway.forwarder import run_due
from gateway.pduguard import SLACK
from gateway.router import route_stable
from storage import audit
from storage.db import session_scope
from storage.models import Instance
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.rawpeer import (
    FAST,
    IMPLICIT_LE,
    VERIFICATION,
    Closed,
    RawPeer,
    Reply,
    abort,
    associate_rq,
    closed_within,
    dimse_status,
    echo_works,
    echo_rq,
    pdu,
    recovered,
    release_rq,
    rss_kib,
    store_rq,
    warmed_up,
)
from tests.sink import StoreSink, route_all_ct

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _rejections(node: Any) -> list[tuple[str, str]]:
    with session_scope(node.app.engine) as session:
        return [(e.actor, str(e.outcome.value))
                for e in audit.list_events(session, event="association-rejected")]


def _indexed(node: Any) -> int:
    with session_scope(node.app.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


@pytest.fixture
def fast_node(make_node: Callable[..., Any]) -> Any:
    """A node with one-second timeouts, warmed up by one echo, and its resource baseline."""
    return warmed_up(make_node(**FAST))


# -- T03: malformed A-ASSOCIATE-RQ ---------------------------------------------------------

def _rq_with(change: Callable[[A_ASSOCIATE_RQ], None]) -> bytes:
    """A valid A-ASSOCIATE-RQ (two Verification contexts), changed after pynetdicom built it."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(associate_rq(((1, VERIFICATION, (IMPLICIT_LE,)), (3, VERIFICATION, (IMPLICIT_LE,)))))
    with warnings.catch_warnings():  # pydicom warns about the over-long UIDs made here
        warnings.simplefilter("ignore")
        change(rq)
        return bytes(rq.encode())


def _app_context(rq: A_ASSOCIATE_RQ) -> None:
    rq.variable_items[0]._application_context_name = UID("1.2.840.10008.3.1.1.9")


def _version(rq: A_ASSOCIATE_RQ) -> None:
    rq.protocol_version = 0x0000


def _long_abstract(rq: A_ASSOCIATE_RQ) -> None:
    rq.presentation_context[0].abstract_transfer_syntax_sub_items[0]._abstract_syntax_name = (
        UID("1." + "2" * 300))


def _long_transfer(rq: A_ASSOCIATE_RQ) -> None:
    rq.presentation_context[0].abstract_transfer_syntax_sub_items[1]._transfer_syntax_name = (
        UID("1." + "2" * 3000))


def _long_implementation(rq: A_ASSOCIATE_RQ) -> None:
    rq.user_information.user_data[1]._implementation_class_uid = UID("1." + "2" * 300)


@pytest.mark.parametrize(("rq", "rejection"), [
    pytest.param(lambda: _rq_with(_app_context), (1, 1, 2), id="non-dicom-application-context"),
    pytest.param(lambda: _rq_with(_version), (1, 2, 2), id="protocol-version-bit-0-clear"),
    pytest.param(lambda: associate_rq(()), (1, 2, 1), id="no-presentation-context"),
])
def test_a_malformed_associate_rq_is_rejected(fast_node: Any, rq: Callable[[], bytes],
                                              rejection: tuple[int, int, int]) -> None:
    """T03, PS3.8 9.3.4 Table 9-21: (1, 1, 2) application context name not supported,
    (1, 2, 2) protocol version not supported; an RQ without a presentation context (9.3.2
    requires one) gets (1, 2, 1)."""
    with RawPeer(fast_node.port) as peer:
        peer.send(rq())
        replies = closed_within(peer, 5)
    assert [r.rejection for r in replies] == [rejection]
    if rejection != (1, 2, 2):  # pynetdicom refuses the version before the node is asked
        assert _rejections(fast_node) == [("CLINIC", "failure")]  # I5
    recovered(fast_node)


def test_an_unregistered_caller_is_rejected_and_audited(make_node: Callable[..., Any]) -> None:
    """T01, I5: an unregistered calling AE where store is closed gets RJ (1, 1, 3) and
    leaves an ``association-rejected`` audit record naming it."""
    node = make_node(**FAST, **{"policy.loopback_store_open": False})
    with RawPeer(node.port) as peer:
        peer.send(associate_rq(calling="STRANGER"))
        replies = closed_within(peer, 5)
    assert [r.rejection for r in replies] == [(1, 1, 3)]
    assert _rejections(node) == [("STRANGER", "failure")]


@pytest.mark.parametrize("change", [_long_abstract, _long_transfer, _long_implementation],
                         ids=["abstract-syntax", "transfer-syntax", "implementation-uid"])
def test_over_long_uids_in_items_get_an_abort_without_harm(
        fast_node: Any, change: Callable[[A_ASSOCIATE_RQ], None]) -> None:
    """T03: a UID of 300-3,000 characters in an item (at most 64, PS3.5 9.1) makes the RQ
    undecodable: an A-ABORT (PS3.8 9.2 AA-1, invalid PDU), no overflow, no crash."""
    with RawPeer(fast_node.port) as peer:
        peer.send(_rq_with(change))
        replies = closed_within(peer, 5)
    assert [r.pdu_type for r in replies] == [0x07]
    recovered(fast_node)


def test_more_than_128_contexts_and_duplicate_ids_get_one_answer_per_id(fast_node: Any) -> None:
    """T03, PS3.8 9.3.2.2: context IDs are odd, 1-255, so 129 contexts repeat one; each ID
    gets exactly one result and the association works."""
    contexts = [((2 * i + 1) % 256, VERIFICATION, (IMPLICIT_LE,)) for i in range(129)]
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(contexts))
        ac = peer.receive()
        assert isinstance(ac, Reply) and ac.pdu_type == 0x02
        assert sorted(ac.context_results) == list(range(1, 256, 2))
        peer.send(release_rq())
        assert [r.pdu_type for r in closed_within(peer, 5)] == [0x06]
    recovered(fast_node)


def test_an_even_context_id_gets_a_rejection(fast_node: Any) -> None:
    """T03, PS3.8 9.3.2.2 (gateway.pduguard): an even context ID is answered with RJ
    (1, 2, 1) at once, audited, and the connection closed."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(((2, VERIFICATION, (IMPLICIT_LE,)),)))
        replies = closed_within(peer, 2)
    assert [r.rejection for r in replies] == [(1, 2, 1)]
    wait_until(lambda: _rejections(fast_node) == [("CLINIC", "failure")], timeout=5,
               what="the rejection audited")
    recovered(fast_node)


# -- T04: not DICOM at all ---------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    pytest.param(b"\xfe\x00\x00\x00\x00\x04garbage!" * 8, id="garbage"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n", id="http"),
    pytest.param(pdu(0x08, b"\x00" * 10), id="pdu-type-8"),
])
def test_non_dicom_bytes_get_an_abort_and_the_connection_closed(fast_node: Any,
                                                                garbage: bytes) -> None:
    """T04, PS3.8 9.2 (Evt19 in Sta2, AA-1): an A-ABORT, then the connection is closed
    within the network timeout: the peer cannot hold the connection's thread."""
    with RawPeer(fast_node.port) as peer:
        peer.send(garbage)
        replies = closed_within(peer, 5)
    assert replies and all(r.pdu_type == 0x07 for r in replies)
    assert replies[0].abort[0] in (0, 2)  # AA-1 names the service user as source
    recovered(fast_node)


# -- T05: a declared length the node never agreed to --------------------------------------

def test_a_truncated_pdu_is_dropped_at_the_network_timeout(fast_node: Any) -> None:
    """T05/T08: a PDU header announcing more than ever arrives: closed at the timeout."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq()[:40])
        closed_within(peer, 5)
    recovered(fast_node)


@pytest.mark.parametrize("established", [False, True], ids=["a-associate-rq", "p-data-tf"])
def test_pdu_length_over_the_maximum_is_aborted_at_once(fast_node: Any,
                                                        established: bool) -> None:
    """T05 (gateway.pduguard): an A-ASSOCIATE-RQ declaring 0xFFFFFFFF bytes, or a P-DATA-TF
    past the negotiated maximum, then a slow trickle: A-ABORT (2, 6: service provider,
    invalid PDU parameter value; PS3.8 9.3.8) at once, nothing of the body buffered."""
    rss_before = rss_kib()
    with RawPeer(fast_node.port) as peer:
        if established:
            peer.send(associate_rq())
            assert getattr(peer.receive(), "pdu_type", None) == 0x02
            header = pdu(0x04, b"", length=fast_node.app.settings.limits.max_pdu + SLACK + 1)
        else:
            header = pdu(0x01, b"", length=0xFFFFFFFF)
        peer.send(header)
        for _ in range(3):
            peer.send(b"\x00")
            time.sleep(0.2)
        replies = closed_within(peer, 2)
    assert [r.abort for r in replies] == [(2, 6)]
    assert rss_kib() - rss_before < 8 * 1024
    recovered(fast_node)


# -- T06: a PDV item longer than its PDU ---------------------------------------------------

@pytest.mark.parametrize("item_length", [0x00001000, 0xFFFFFFF0], ids=["past-end", "near-2^32"])
def test_pdv_item_longer_than_its_pdu_gets_an_abort(fast_node: Any, item_length: int) -> None:
    """T06, PS3.8 9.3.5: a PDV item length past the P-DATA-TF's end: A-ABORT, no crash."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq())
        assert getattr(peer.receive(), "pdu_type", None) == 0x02
        good = echo_rq()[0]
        bad = good[:6] + item_length.to_bytes(4, "big") + good[10:]
        peer.send(bad)
        replies = closed_within(peer, 5)
    assert [r.pdu_type for r in replies] == [0x07]
    recovered(fast_node)


# -- T07: PDUs out of sequence -------------------------------------------------------------

@pytest.mark.parametrize("first", [
    pytest.param(lambda: echo_rq()[0], id="p-data-before-associate"),
    pytest.param(lambda: pdu(0x06, b"\x00" * 4), id="release-rp-without-rq"),
    pytest.param(release_rq, id="release-rq-before-associate"),
])
def test_a_pdu_before_the_association_gets_an_abort(fast_node: Any,
                                                    first: Callable[[], bytes]) -> None:
    """T07, PS3.8 9.2 Sta2: anything but A-ASSOCIATE-RQ is answered by AA-1 (A-ABORT) and
    the connection closes."""
    with RawPeer(fast_node.port) as peer:
        peer.send(first())
        replies = closed_within(peer, 5)
    assert [r.pdu_type for r in replies] == [0x07]
    recovered(fast_node)


@pytest.mark.parametrize("second", [
    pytest.param(associate_rq, id="second-associate-rq"),
    pytest.param(lambda: pdu(0x06, b"\x00" * 4), id="release-rp-without-rq"),
    pytest.param(lambda: pdu(0x02, associate_rq()[6:]), id="associate-ac-from-requestor"),
])
def test_a_pdu_out_of_sequence_in_an_association_gets_an_abort(
        fast_node: Any, second: Callable[[], bytes]) -> None:
    """T07, PS3.8 9.2 Sta6: an unexpected PDU is answered by AA-8, an A-ABORT from the
    service provider (source 2; pynetdicom gives reason 0, not specified)."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq())
        assert getattr(peer.receive(), "pdu_type", None) == 0x02
        peer.send(second())
        replies = closed_within(peer, 5)
    assert [r.abort for r in replies] == [(2, 0)]
    recovered(fast_node)


def test_a_peer_abort_ends_the_association_quietly(fast_node: Any) -> None:
    """PS3.8 9.3.8: an A-ABORT from the peer closes the connection without an answer."""
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq())
        assert getattr(peer.receive(), "pdu_type", None) == 0x02
        peer.send(abort(0, 0))
        assert closed_within(peer, 5) == []
    recovered(fast_node)


# -- T08: silence --------------------------------------------------------------------------

def test_connect_then_silence_is_closed_at_the_acse_timeout(fast_node: Any) -> None:
    """T08, PS3.8 9.2 (ARTIM): no A-ASSOCIATE-RQ within acse_timeout: the node closes."""
    started = time.monotonic()
    with RawPeer(fast_node.port) as peer:
        assert isinstance(peer.receive(timeout=5), Closed)
    assert 0.8 < time.monotonic() - started < 5
    recovered(fast_node)


def _stores(tmp_path: Any, count: int = 1) -> list[list[bytes]]:
    """C-STORE-RQs of ``count`` instances of one study, each as its P-DATA-TF PDUs."""
    study = make_clinic_study(tmp_path / "study", series=1, per_series=count, jpeg=False)
    requests = []
    for path in study.files.values():
        ds = dcmread(path)
        encoded = encode(ds, True, True)
        assert encoded is not None
        requests.append(store_rq(ds, encoded, max_pdu=4096))
    return requests


def _partial_store(tmp_path: Any) -> list[bytes]:
    return _stores(tmp_path)[0]


@pytest.mark.parametrize("cut", ["between-pdus", "inside-a-pdu"])
def test_an_association_idle_mid_dataset_is_aborted_and_leaves_no_file(
        fast_node: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, cut: str) -> None:
    """T08 slowloris, T25: a C-STORE stopped mid-dataset is ended at the network/DIMSE
    timeout, and pynetdicom's partial file in the spool's receiving folder is removed."""
    import tempfile

    receiving = fast_node.receiving_dir
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    pdus = _partial_store(tmp_path)
    assert len(pdus) > 3
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(((1, CT_IMAGE, (IMPLICIT_LE,)),)))
        assert getattr(peer.receive(), "context_results", None) == {1: 0}
        sent = pdus[:3] if cut == "between-pdus" else [*pdus[:2], pdus[2][:100]]
        peer.send(*sent)
        wait_until(lambda: any(receiving.iterdir()), timeout=5, what="a partial receive")
        replies = closed_within(peer, 6)
    assert all(r.pdu_type == 0x07 for r in replies)
    wait_until(lambda: not any(receiving.iterdir()), timeout=5,
               what=f"no partial file left in {receiving}")
    assert fast_node.app.spool.depth() == 0
    recovered(fast_node)


def _cut_mid_store(node: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                   cut: Callable[[RawPeer], None]) -> None:
    """T25: two C-STOREs answered 0x0000, then ``cut`` halfway through the third: the two
    are indexed (I1, I2), the third leaves no file and is not indexed."""
    import tempfile

    receiving = node.receiving_dir
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    first, second, third = _stores(tmp_path, 3)
    with RawPeer(node.port) as peer:
        peer.send(associate_rq(((1, CT_IMAGE, (IMPLICIT_LE,)),)))
        assert getattr(peer.receive(), "context_results", None) == {1: 0}
        for request in (first, second):
            peer.send(*request)
            assert dimse_status(peer.receive()) == 0x0000
        peer.send(*third[:3])
        wait_until(lambda: any(receiving.iterdir()), timeout=5, what="a partial receive")
        cut(peer)
    wait_until(lambda: not any(receiving.iterdir()), timeout=10, what="the partial file removed")
    wait_until(lambda: _indexed(node) == 2 and node.app.spool.depth() == 0,
               timeout=20, what="the two acknowledged instances indexed")
    with StoreSink() as sink:
        _forward_everything(node, sink)
        with session_scope(node.app.engine, readonly=True) as session:
            indexed = set(session.scalars(select(Instance.sop_instance_uid)))
        wait_until(lambda: len(sink.offered) >= 2, timeout=20, what="two instances forwarded")
        assert sorted(sink.offered) == sorted(indexed), "each acknowledged instance once"
    recovered(node)


def _forward_everything(node: Any, sink: StoreSink) -> None:
    """Route every CT study to ``sink`` and forward what is due (T25: "acknowledged
    instances durable and forwarded"), as the node's clock would once the study is stable."""
    later = datetime.now(UTC) + timedelta(
        seconds=node.app.settings.forward.stable_after_seconds + 5)
    route_all_ct(node.app.engine, sink.port)
    route_stable(node.app, later)
    run_due(node.app, now=later)


def test_an_abort_mid_store_keeps_the_acknowledged_and_discards_the_partial(
        fast_node: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def aborted(peer: RawPeer) -> None:
        peer.send(abort(0, 0))
        assert closed_within(peer, 5) == []

    _cut_mid_store(fast_node, tmp_path, monkeypatch, aborted)


def test_a_tcp_reset_mid_store_keeps_the_acknowledged_and_discards_the_partial(
        fast_node: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a TCP RST instead of an A-ABORT (the sender's machine lost power, a firewall
    cut the flow)."""
    import socket
    import struct

    def reset(peer: RawPeer) -> None:  # linger on, timeout 0: close() sends RST, not FIN
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()

    _cut_mid_store(fast_node, tmp_path, monkeypatch, reset)


def test_a_last_fragment_flag_arriving_early_gets_c000_and_keeps_nothing(
        fast_node: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """T13: a data set fragment in the middle flagged as the last (PS3.8 E.2 message control
    header 0x02): the data set ends there, cut inside its Pixel Data; 0xC000, no file, no
    row, and the association goes on."""
    import tempfile

    receiving = fast_node.receiving_dir
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    request = _partial_store(tmp_path)
    # each PDU: 6-byte PDU header, 4-byte PDV length, context ID, message control header
    headers = [chunk[11] for chunk in request]
    assert headers[0] & 0x01 and headers[-1] == 0x02, headers  # command first, data last
    data = [n for n, header in enumerate(headers) if not header & 0x01]
    cut = data[len(data) // 2]
    early = bytearray(request[cut])
    early[11] = 0x02
    with RawPeer(fast_node.port) as peer:
        peer.send(associate_rq(((1, CT_IMAGE, (IMPLICIT_LE,)),)))
        assert getattr(peer.receive(), "context_results", None) == {1: 0}
        peer.send(*request[:cut], bytes(early))
        assert dimse_status(peer.receive()) == 0xC000
        peer.send(*_stores(tmp_path / "next", 1)[0])  # the association still serves
        assert dimse_status(peer.receive()) == 0x0000
    wait_until(lambda: _indexed(fast_node) == 1 and fast_node.app.spool.depth() == 0,
               timeout=20, what="only the whole instance indexed")
    assert not any(receiving.iterdir())
    recovered(fast_node)


# -- one normal association keeps working while a bad one waits ---------------------------

def test_a_stalled_peer_does_not_stall_others(fast_node: Any) -> None:
    """I4: while a peer sits on half a PDU, other associations are served at once."""
    with RawPeer(fast_node.port) as stalled:
        stalled.send(associate_rq()[:20])
        started = time.monotonic()
        assert echo_works(fast_node.port)
        assert time.monotonic() - started < 0.5
    recovered(fast_node)
