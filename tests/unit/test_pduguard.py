"""gateway.pduguard: the pynetdicom read loop it follows, and the header/body alternation."""

from __future__ import annotations

import inspect
import struct
from collections import deque

import pynetdicom
import pytest
from pynetdicom import fsm
from pynetdicom.dul import DULServiceProvider

from gateway.pduguard import MAX_CONTROL_PDU, SLACK, PduGuard

CHECKED_PYNETDICOM = "3.0"


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway.pduguard was written for pynetdicom {CHECKED_PYNETDICOM}, this is "
        f"{pynetdicom.__version__}: re-read DULServiceProvider._read_pdu_data")
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    # a header of 6, then the declared length, each through socket.recv; an OSError is Evt17
    assert "self.socket.recv(6)" in source and "self.socket.recv(pdu_length)" in source
    assert "except (OSError, TimeoutError)" in source
    # AE-6 turns the decoded request into its indication outside any try: a failure there
    # kills the DUL thread
    assert "recv_pdu.to_primitive()" in inspect.getsource(fsm.AE_6)


class _Raw:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


class _Socket:
    """An AssociationSocket stand-in whose reads come from ``chunks``."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = deque(chunks)
        self.socket = _Raw()

    def recv(self, nr_bytes: int) -> bytearray:
        chunk = self.chunks.popleft()
        assert len(chunk) == nr_bytes
        return bytearray(chunk)


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def test_bodies_are_not_mistaken_for_headers() -> None:
    """A 6-byte body that looks like a huge header passes: only headers are checked."""
    body = _header(0x04, 0xFFFFFFFF)
    sock = _Socket(_header(0x04, 6), body, _header(0x05, 4), b"\x00" * 4, _header(0x04, 16384))
    guard = PduGuard(sock, 16384)
    assert [bytes(guard(n)) for n in (6, 6, 6, 4, 6)] == list(
        _Socket(_header(0x04, 6), body, _header(0x05, 4), b"\x00" * 4,
                _header(0x04, 16384)).chunks)
    assert sock.socket.sent == []


@pytest.mark.parametrize(("pdu_type", "length", "refused"), [
    (0x04, 16384 + SLACK, False),
    (0x04, 16384 + SLACK + 1, True),
    (0x01, MAX_CONTROL_PDU, False),
    (0x01, MAX_CONTROL_PDU + 1, True),
    (0x07, 0xFFFFFFFF, True),
])
def test_a_header_past_its_limit_is_answered_with_an_abort(pdu_type: int, length: int,
                                                           refused: bool) -> None:
    sock = _Socket(_header(pdu_type, length))
    guard = PduGuard(sock, 16384)
    if refused:
        with pytest.raises(ConnectionAbortedError, match="over the maximum"):
            guard(6)
        # A-ABORT: type 7, length 4, then reserved, reserved, source 2, reason 6
        assert sock.socket.sent == [bytes.fromhex("0700000000040000" "0206")]
    else:
        assert bytes(guard(6)) == _header(pdu_type, length)
        assert sock.socket.sent == []


def test_a_request_with_an_even_context_id_is_rejected_after_its_body() -> None:
    """PS3.8 9.3.2.2: context IDs are odd. The body is read, then A-ASSOCIATE-RJ (1, 2, 1)
    is sent and the read fails; an odd one passes untouched."""
    from tests.rawpeer import IMPLICIT_LE, VERIFICATION, associate_rq

    for context_id, refused in ((1, False), (2, True)):
        rq = associate_rq(((context_id, VERIFICATION, (IMPLICIT_LE,)),))
        sock = _Socket(rq[:6], rq[6:])
        told: list[tuple[str, str]] = []
        guard = PduGuard(sock, 16384, lambda calling, reason: told.append((calling, reason)))
        assert bytes(guard(6)) == rq[:6]
        if refused:
            with pytest.raises(ConnectionAbortedError, match="invalid A-ASSOCIATE-RQ"):
                guard(len(rq) - 6)
            # A-ASSOCIATE-RJ: type 3, length 4, reserved, result 1, source 2, reason 1
            assert sock.socket.sent == [bytes.fromhex("0300000000040001" "0201")]
            assert [calling for calling, _ in told] == ["CLINIC"]
        else:
            assert bytes(guard(len(rq) - 6)) == rq[6:]
            assert (sock.socket.sent, told) == ([], [])


def test_the_walk_finds_the_ids_pynetdicom_decodes() -> None:
    """even_context_ids reads the IDs where pynetdicom's decoder finds them: for a request
    with every ID from 1 to 255 and another with some even ones among them."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from gateway.pduguard import even_context_ids
    from tests.rawpeer import IMPLICIT_LE, associate_rq

    odd = associate_rq([(n, str(CTImageStorage), (IMPLICIT_LE,)) for n in range(1, 256, 2)])
    decoded = A_ASSOCIATE_RQ()
    decoded.decode(odd)
    ids = [item.context_id for item in decoded.variable_items if item.item_type == 0x20]
    assert ids == list(range(1, 256, 2)) and even_context_ids(odd) == []
    mixed = associate_rq([(n, str(CTImageStorage), (IMPLICIT_LE,)) for n in (1, 4, 5, 254)])
    assert even_context_ids(mixed) == [4, 254]
