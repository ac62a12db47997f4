"""gateway.pduguard: the pynetdicom read loop it follows, and the header/body alternation."""

from __future__ import annotations

import inspect
import struct
from collections import deque

import pynetdicom
import pytest
from pynetdicom.dul import DULServiceProvider

from gateway.pduguard import MAX_CONTROL_PDU, SLACK, PduLengthGuard

CHECKED_PYNETDICOM = "3.0"


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway.pduguard was written for pynetdicom {CHECKED_PYNETDICOM}, this is "
        f"{pynetdicom.__version__}: re-read DULServiceProvider._read_pdu_data")
    source = inspect.getsource(DULServiceProvider._read_pdu_data)
    # a header of 6, then the declared length, each through socket.recv; an OSError is Evt17
    assert "self.socket.recv(6)" in source and "self.socket.recv(pdu_length)" in source
    assert "except (OSError, TimeoutError)" in source


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
    guard = PduLengthGuard(sock, 16384)
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
    guard = PduLengthGuard(sock, 16384)
    if refused:
        with pytest.raises(ConnectionAbortedError, match="over the maximum"):
            guard(6)
        # A-ABORT: type 7, length 4, then reserved, reserved, source 2, reason 6
        assert sock.socket.sent == [bytes.fromhex("0700000000040000" "0206")]
    else:
        assert bytes(guard(6)) == _header(pdu_type, length)
        assert sock.socket.sent == []
