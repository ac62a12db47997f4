"""C-FIND pending responses, encoded once per query shape and sent a PDU each (PS3.7 9.3.2).

Every pending response to one C-FIND request has the same command set
(C-FIND-RSP, the request's SOP Class and Message ID, status 0xFF00 or
0xFF01, a data set present) and identifiers with the same elements in
the same order; only the values differ. So, once per query:

- :class:`IdentifierEncoder` works out each returned element's header
  (tag, VR, length field) for the negotiated transfer syntax, and
  encodes a row's values as pydicom would: text in UTF-8 (the responses'
  SpecificCharacterSet is ``ISO_IR 192``), padded to an even length with a
  space (UIDs with a NUL), multiple values joined with ``\\``, an empty
  value as a zero length, a requested sequence as an empty one. A value
  too long for a 16-bit length field makes :meth:`IdentifierEncoder.encode`
  return ``None`` and the caller falls back to pydicom.
- :class:`PendingSender` encodes the command set once (with pynetdicom's
  own message class and encoder, so the bytes are those pynetdicom would
  send) and hands each response to the association's DICOM Upper Layer as
  one P-DATA-TF PDU holding the command and the identifier as two PDVs
  (PS3.8 9.3.5), or as fragments of at most the peer's maximum PDU length
  when they do not fit in one.

What this saves per response, against yielding a Dataset for pynetdicom
to send: building and encoding the identifier element by element, and
building and encoding the command set twice (its group length, then the
message); the network thread also sends one PDU instead of two. The
responses go through the same send queue as everything else on the
association, in order, so the final response pynetdicom sends after the
handler's last yield still comes last.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from io import BytesIO
from typing import Any, Final

from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

__all__ = ["IdentifierEncoder", "PendingSender"]

#: VRs whose explicit-VR length field is 32 bits, after two reserved bytes (PS3.5 7.1.2).
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                              "UR", "UT", "UV"})
#: PDV message control header: command or data set, last fragment or not (PS3.8 E.2).
_COMMAND_LAST: Final = b"\x03"
_COMMAND_MORE: Final = b"\x01"
_DATA_LAST: Final = b"\x02"
_DATA_MORE: Final = b"\x00"
#: A PDV item's length (4 bytes), context ID and control header (1 byte each).
_PDV_OVERHEAD: Final = 6


class IdentifierEncoder:
    """Encode identifiers of fixed elements from rows (see the module notes).

    Parameters
    ----------
    elements : Sequence[tuple[int, str, Any]]
        ``(tag, VR, source)`` in any order, one per element: ``source`` is
        a field name (its value read from the row), a fixed ``bytes``
        value, or ``None`` for an element always sent empty.
    implicit_vr, little_endian : bool
        The negotiated transfer syntax.
    multi_valued : Iterable[str]
        Fields stored backslash-joined, sent as multiple values without
        empty ones.

    Raises
    ------
    ValueError
        When a VR is not one two-letter VR (an ambiguous one such as
        ``US or SS``): pydicom's encoder has to decide those.
    """

    def __init__(self, elements: Sequence[tuple[int, str, Any]], *, implicit_vr: bool,
                 little_endian: bool, multi_valued: Iterable[str] = ()) -> None:
        order = "<" if little_endian else ">"
        self._tag = struct.Struct(f"{order}HH")
        self._short = struct.Struct(f"{order}H")
        self._long = struct.Struct(f"{order}L")
        self._multi = frozenset(multi_valued)
        #: (encoded header, or whole element when fixed; VR; 32-bit length; field or None)
        parts: list[tuple[bytes, str, bool, str | None]] = []
        for tag, vr, source in sorted(elements, key=lambda item: item[0]):
            if len(vr) != 2 or not vr.isalpha():
                raise ValueError(f"cannot encode VR {vr!r} of ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            prefix = self._tag.pack(tag >> 16, tag & 0xFFFF)
            long_length = implicit_vr or vr in _LONG_VRS
            if not implicit_vr:
                prefix += vr.encode("ascii") + (b"\x00\x00" if vr in _LONG_VRS else b"")
            if isinstance(source, bytes):
                value = self._padded(source, vr)
                parts.append((prefix + self._length(len(value), long_length) + value, vr,
                              long_length, None))
            elif source is None or vr == "SQ":
                parts.append((prefix + self._length(0, long_length), vr, long_length, None))
            else:
                parts.append((prefix, vr, long_length, str(source)))
        self._parts = parts

    def _length(self, length: int, long_length: bool) -> bytes:
        return (self._long if long_length else self._short).pack(length)

    @staticmethod
    def _padded(value: bytes, vr: str) -> bytes:
        if len(value) % 2:
            return value + (b"\x00" if vr == "UI" else b" ")
        return value

    def encode(self, row: Mapping[str, Any]) -> bytes | None:
        """The identifier of ``row``, or ``None`` when a value does not fit its length field."""
        out = []
        for prefix, vr, long_length, field in self._parts:
            if field is None:
                out.append(prefix)
                continue
            value = row.get(field)
            if value is None or value == "":
                text = b""
            elif field in self._multi:
                text = "\\".join(item for item in str(value).split("\\") if item).encode()
            else:
                text = str(value).encode()
            text = self._padded(text, vr)
            if not long_length and len(text) > 0xFFFF:
                return None
            out.append(prefix + self._length(len(text), long_length) + text)
        return b"".join(out)


class PendingSender:
    """Send pending C-FIND responses of one request (see the module notes).

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        The association the request came on.
    context_id : int
        Its presentation context.
    message_id : int
        The request's Message ID (the responses' Message ID Being Responded To).
    sop_class_uid : str
        The request's Affected SOP Class UID.
    status : int
        0xFF00, or 0xFF01 when an optional key was not supported.
    """

    def __init__(self, assoc: Any, context_id: int, message_id: int, sop_class_uid: str,
                 status: int) -> None:
        primitive = C_FIND()
        primitive.MessageIDBeingRespondedTo = message_id
        primitive.AffectedSOPClassUID = sop_class_uid
        primitive.Status = status
        primitive.Identifier = BytesIO(b"\x00")  # any: it only marks a data set as present
        message = C_FIND_RSP()
        message.primitive_to_message(primitive)
        command = encode(message.command_set, True, True)
        if not command:
            raise ValueError("the C-FIND-RSP command set cannot be encoded")
        self._command = command
        self._context_id = context_id
        self._dul = assoc.dul
        self._max_pdu = int(assoc.dimse.maximum_pdu_size or 0)

    def send(self, identifier: bytes) -> None:
        """Queue one pending response with ``identifier`` for the network thread."""
        whole = 2 * _PDV_OVERHEAD + len(self._command) + len(identifier)
        if not self._max_pdu or whole <= self._max_pdu:
            primitive = P_DATA()
            primitive.presentation_data_value_list.append(
                (self._context_id, _COMMAND_LAST + self._command))
            primitive.presentation_data_value_list.append(
                (self._context_id, _DATA_LAST + identifier))
            self._dul.send_pdu(primitive)
            return
        for control, fragment in [*self._fragments(self._command, _COMMAND_MORE, _COMMAND_LAST),
                                  *self._fragments(identifier, _DATA_MORE, _DATA_LAST)]:
            primitive = P_DATA()
            primitive.presentation_data_value_list.append((self._context_id, control + fragment))
            self._dul.send_pdu(primitive)

    def _fragments(self, data: bytes, more: bytes, last: bytes) -> list[tuple[bytes, bytes]]:
        size = self._max_pdu - _PDV_OVERHEAD
        pieces = [data[start:start + size] for start in range(0, len(data), size)] or [b""]
        return [(last if index == len(pieces) - 1 else more, piece)
                for index, piece in enumerate(pieces)]
