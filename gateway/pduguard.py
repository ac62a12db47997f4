"""A PDU's declared length, checked as soon as its header is in (RELIABILITY T05).

PS3.8 9.3.1: every PDU starts with a type, a reserved byte and a 4-byte
length of what follows. The Maximum Length Received this node sends in its
A-ASSOCIATE-AC (``limits.max_pdu``; PS3.8 D.1.1) bounds "the variable field
of the P-DATA-TF PDUs" a peer may send it. The A-ASSOCIATE, A-RELEASE and
A-ABORT PDUs have no negotiated maximum, but what they may hold (at most 128
presentation contexts, a user identity of two 64 KiB fields) stays far below
:data:`MAX_CONTROL_PDU`. A P-DATA-TF is refused only past the maximum plus
:data:`SLACK` bytes, so that a sender which counts its PDV item headers
outside the maximum (a reading some implementations make) still gets through;
what T05 is about, a length no sender would ever need, is refused all the same.

pynetdicom 3.0 (``DULServiceProvider._read_pdu_data``) reads the 6-byte
header, then reads the declared length whatever it is: a PDU announcing
0xFFFFFFFF bytes is buffered in memory for as long as the peer sends, 4 GiB
if it sends fast, and a byte trickled now and then keeps the network timeout
from ever firing. :func:`install` (an EVT_CONN_OPEN handler) wraps the
association socket's ``recv`` so that the header is checked when it arrives:
a length past the maximum is answered with A-ABORT, source 2 (service
provider), reason 6 (invalid PDU parameter value; PS3.8 9.3.8, Table 9-26),
logged, and the read fails as a closed connection does, so pynetdicom ends
the association as it would on a dropped connection (Evt17). Nothing of the
PDU's body is read.

The same reads catch one A-ASSOCIATE-RQ that pynetdicom decodes but cannot
turn into its A-ASSOCIATE indication (RELIABILITY T03): a presentation
context with an even ID (PS3.8 9.3.2.2: "odd integers between 1 and 255")
makes ``fsm.AE_6`` raise in the DUL thread, which dies, and the peer hears
nothing until the ACSE timeout. Once a request's body is in, the IDs of its
presentation context items are read where PS3.8 Tables 9-11 and 9-13 put
them (a walk over the item headers: decoding the whole request again with
pynetdicom would cost about 28 ms for 128 contexts, as much as the rest of
the association); with an even one the peer gets A-ASSOCIATE-RJ (1, 2, 1):
rejected permanent, by the service provider's ACSE, no reason given, as for
a request with no presentation context. The rejection is logged and
audited (``association-rejected``), and the read fails as above. Anything
else wrong with a request is left to pynetdicom.
``tests/unit/test_pduguard.py`` pins the pynetdicom version whose read
loop and AE-6 this follows.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_ASSOCIATE

__all__ = ["MAX_CONTROL_PDU", "SLACK", "PduGuard", "even_context_ids", "install"]

logger = logging.getLogger(__name__)

#: the largest A-ASSOCIATE, A-RELEASE or A-ABORT PDU read (its length field), bytes
MAX_CONTROL_PDU = 1 << 20
#: tolerated past the negotiated maximum in a P-DATA-TF's length (see the module docstring)
SLACK = 1024
_A_ASSOCIATE_RQ = 0x01
_P_DATA_TF = 0x04
_HEADER = 6
#: told (calling AE title, reason) of each request rejected here
OnRejected = Callable[[str, str], None]


#: A-ASSOCIATE-RQ (PS3.8 Table 9-11): after the 6-byte header, protocol version (2),
#: reserved (2), called AE title (16), calling AE title (16), reserved (32), then items
_CALLING_AE = slice(26, 42)
_ITEMS = 74
_PRESENTATION_CONTEXT = 0x20


def even_context_ids(raw: bytes) -> list[int]:
    """The even IDs among an A-ASSOCIATE-RQ's presentation context items (Table 9-13: item
    type 20H, reserved, item length (2), then the ID); ``raw`` is the whole PDU."""
    found = []
    offset = _ITEMS
    while offset + 4 < len(raw):
        item_type = raw[offset]
        item_length = int.from_bytes(raw[offset + 2:offset + 4], "big")
        if item_type == _PRESENTATION_CONTEXT and item_length and raw[offset + 4] % 2 == 0:
            found.append(raw[offset + 4])
        offset += 4 + item_length
    return found


def _reject_pdu() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = 0x01  # rejected permanent
    primitive.result_source = 0x02  # service provider, ACSE related function
    primitive.diagnostic = 0x01  # no reason given
    return bytes(A_ASSOCIATE_RJ(primitive).encode())


def _abort_pdu() -> bytes:
    pdu = A_ABORT_RQ()
    pdu.source = 2  # service provider
    pdu.reason_diagnostic = 6  # invalid PDU parameter value
    return bytes(pdu.encode())


class PduGuard:
    """``recv`` for one ``AssociationSocket``: refuses a header whose length is over the limit,
    and an A-ASSOCIATE-RQ without an indication (see the module docstring).

    pynetdicom alternates two reads per PDU, the header (6 bytes) and then
    the declared length; the guard follows that alternation to know which
    read is a header.
    """

    def __init__(self, association_socket: Any, max_pdata: int,
                 on_rejected: OnRejected | None = None) -> None:
        self._socket = association_socket
        self._recv = association_socket.recv
        self._max_pdata = max_pdata + SLACK
        self._on_rejected = on_rejected
        self._header = b""  # the header whose body is read next; empty: a header is next

    def __call__(self, nr_bytes: int) -> bytearray:
        data: bytearray = self._recv(nr_bytes)
        if self._header:
            header, self._header = self._header, b""
            if header[0] == _A_ASSOCIATE_RQ:
                self._check_request(header + data)
            return data
        if nr_bytes != _HEADER or len(data) != _HEADER:
            return data  # a short read: pynetdicom treats it as a closed connection
        pdu_type, _, length = struct.unpack(">BBL", data)
        limit = self._max_pdata if pdu_type == _P_DATA_TF else MAX_CONTROL_PDU
        if length > limit:
            self._refuse(pdu_type, length, limit)
        if length:
            self._header = bytes(data)
        return data

    def _check_request(self, raw: bytes) -> None:
        """Reject an A-ASSOCIATE-RQ with an even presentation context ID (see the docstring)."""
        even = even_context_ids(raw)
        if not even:
            return
        calling = raw[_CALLING_AE].decode("ascii", "replace").strip()
        reason = f"invalid A-ASSOCIATE-RQ (even presentation context ID {even[0]})"
        if self._on_rejected is not None:  # it logs and audits
            self._on_rejected(calling, reason)
        else:
            logger.warning("association-rejected calling_ae=%r rj=1,2,1 reason=%r",
                           calling, reason)
        self._send(_reject_pdu())
        raise ConnectionAbortedError(reason)

    def _send(self, pdu: bytes) -> None:
        raw = self._socket.socket
        try:
            if raw is not None:
                raw.sendall(pdu)
        except OSError:
            pass

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        logger.warning("pdu refused type=0x%02X length=%d max=%d: A-ABORT (2, 6)",
                       pdu_type, length, limit)
        self._send(_abort_pdu())
        raise ConnectionAbortedError(
            f"PDU type 0x{pdu_type:02X} declares {length} bytes, over the maximum {limit}")


def install(event: Any, on_rejected: OnRejected | None = None) -> None:
    """EVT_CONN_OPEN: guard the association socket's reads (see the module docstring)."""
    association = event.assoc
    sock = association.dul.socket
    if sock is not None:
        sock.recv = PduGuard(sock, association.ae.maximum_pdu_size or 2**32 - 1, on_rejected)
