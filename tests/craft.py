"""Hand-made dataset bytes that pydicom will not write, sent as a C-STORE by the raw peer.

pydicom encodes every well-formed part (:func:`encode`); the malformed parts
(a length that runs past the end, an unknown VR, a value of the wrong VR,
sequences nested thousands deep without lengths) are framed here byte by
byte after PS3.5 7.1 (data elements) and 7.5 (items and delimiters), and
spliced in at their tag's place so that tags stay in ascending order.
:func:`store` sends the result over an association of the raw peer
(:mod:`tests.rawpeer`) and returns the C-STORE status, or ``None`` when the
node answered with something else (an A-ABORT, a close).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from tests.corpus import make_clinic_study
from tests.rawpeer import (
    RawPeer,
    Reply,
    associate_rq,
    dimse_status,
    pdu,
    release_rq,
    store_rq,
)

__all__ = ["CT_IMAGE", "EXPLICIT_LE", "UNDEFINED", "element", "encode", "item", "nested",
           "one_ct", "store", "store_reply", "stream_store"]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
UNDEFINED = 0xFFFFFFFF
#: PS3.5 7.1.2: explicit VRs whose length is 4 bytes after two reserved ones
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def _tag(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def element(tag: int, vr: str, value: bytes = b"", *, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` may lie about ``value``'s size.

    A VR outside PS3.5 Table 6.2-1 (``"ZZ"``) is framed with a 4-byte length.
    """
    size = len(value) if length is None else length
    if vr in _LONG or vr not in _SHORT_VRS:
        return _tag(tag) + vr.encode() + b"\0\0" + struct.pack("<L", size) + value
    return _tag(tag) + vr.encode() + struct.pack("<H", size) + value


_SHORT_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN",
              "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}


def item(body: bytes, *, undefined: bool = False) -> bytes:
    """A sequence item (PS3.5 7.5): defined length, or undefined with its delimiter."""
    if undefined:
        return _tag(_ITEM) + struct.pack("<L", UNDEFINED) + body + _tag(_ITEM_END) + b"\0" * 4
    return _tag(_ITEM) + struct.pack("<L", len(body)) + body


def nested(depth: int, *, undefined: bool, tag: int = 0x00081140) -> bytes:
    """``depth`` sequences each holding one item with the next (the innermost item empty).

    The sequence is Referenced Image Sequence (0008,1140), which the profile keeps.
    """
    if undefined:  # built flat: head, then all the closing delimiters
        head = (_tag(tag) + b"SQ\0\0" + struct.pack("<L", UNDEFINED)
                + _tag(_ITEM) + struct.pack("<L", UNDEFINED))
        tail = _tag(_ITEM_END) + b"\0" * 4 + _tag(_SEQ_END) + b"\0" * 4
        return head * depth + tail * depth
    body = b""
    for _ in range(depth):
        body = element(tag, "SQ", item(body))
    return body


def encode(ds: Dataset, crafted: Mapping[int, bytes] | None = None) -> bytes:
    """``ds`` in explicit VR little endian, with ``crafted`` bytes in place of those tags."""
    crafted = dict(crafted or {})
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False

    def tags() -> Iterator[int]:
        yield from sorted(set(ds.keys()) | set(crafted))

    for tag in tags():
        if tag in crafted:
            fp.write(crafted[tag])
        else:
            write_data_element(fp, ds[tag])
    return fp.getvalue()


def one_ct(root: Path, seed: int = 0) -> Dataset:
    """One 64x64 CT slice as the clinic sends it (with its planted PHI)."""
    study = make_clinic_study(root, series=1, per_series=1, jpeg=False, seed=seed)
    return dcmread(next(iter(study.files.values())))


def store_reply(port: int, ds: Dataset, encoded: bytes, *, timeout: float = 10.0
                ) -> Reply | object:
    """Send ``encoded`` as ``ds``'s C-STORE dataset; the node's first reply, then release."""
    with RawPeer(port, timeout=timeout) as peer:
        peer.send(associate_rq(((1, str(ds.SOPClassUID), (EXPLICIT_LE,)),)))
        accepted = peer.receive()
        assert isinstance(accepted, Reply) and accepted.context_results == {1: 0}, accepted
        peer.send(*store_rq(ds, encoded))
        reply = peer.receive()
        if isinstance(reply, Reply) and reply.pdu_type == 0x04:
            peer.send(release_rq())
            peer.receive()
        return reply


def store(port: int, ds: Dataset, encoded: bytes) -> int | None:
    """The C-STORE status the node answers ``encoded`` with, or None (aborted, closed)."""
    return dimse_status(store_reply(port, ds, encoded))


def stream_store(port: int, ds: Dataset, head: bytes, *, total: int, chunk: int = 16000,
                 timeout: float = 10.0) -> tuple[int, list[object]]:
    """Send ``ds``'s C-STORE command, then ``head`` and zeros as dataset fragments that never
    end, until ``total`` bytes went or the node stops taking them.

    The fragments are framed here (PS3.8 9.3.5.1: a PDV item's length counts
    its context ID and message control header; control 0x00 is a dataset
    fragment that is not the last), so nothing the size of ``total`` is ever
    built in memory. Returns the bytes of dataset sent and what the node
    answered until it closed.
    """
    with RawPeer(port, timeout=timeout) as peer:
        peer.send(associate_rq(((1, str(ds.SOPClassUID), (EXPLICIT_LE,)),)))
        accepted = peer.receive()
        assert isinstance(accepted, Reply) and accepted.context_results == {1: 0}, accepted
        command = [p for p in store_rq(ds, head) if p[11] & 0x01]  # command fragments only
        peer.send(*command)
        sent = 0
        filler = b"\0" * chunk
        try:
            while sent < total:
                data = head if sent == 0 else filler
                peer.sock.sendall(pdu(0x04, struct.pack(">LBB", len(data) + 2, 1, 0x00) + data))
                sent += len(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            replies: list[object] = list(peer.receive_until_closed())
        except (TimeoutError, ConnectionResetError):
            replies = [None]
        return sent, replies
