"""A scripted peer that speaks the DICOM Upper Layer byte by byte (PS3.8 9.3).

Valid PDUs are encoded by pynetdicom's own classes (:mod:`pynetdicom.pdu`,
:mod:`pynetdicom.pdu_primitives`, :mod:`pynetdicom.dimse_messages`); the
tests then cut, corrupt or reorder those bytes, or send arbitrary ones, and
read back what the node answers: an A-ASSOCIATE-AC or -RJ, an A-ABORT, a
P-DATA-TF, an A-RELEASE-RP, or the connection closed. Modelled on
pynetdicom's ``tests/parrot.py``, from the requestor's side.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    P_DATA,
)
from pynetdicom.presentation import PresentationContext

from tests.conftest import wait_until

__all__ = [
    "APPLICATION_CONTEXT", "IMPLICIT_LE", "VERIFICATION", "Closed", "RawPeer", "Reply",
    "FAST", "abort", "associate_rq", "closed_within", "describe_resources", "dimse_status",
    "echo_rq", "echo_works",
    "pdu", "recovered", "release_rq", "resources", "rss_kib", "store_rq", "warmed_up",
]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.3811.9"

#: PS3.8 Table 9-11: the PDU types this peer decodes
_DECODERS = {0x02: A_ASSOCIATE_AC, 0x03: A_ASSOCIATE_RJ, 0x04: P_DATA_TF,
             0x06: A_RELEASE_RP, 0x07: A_ABORT_RQ}


def associate_rq(
    contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, (IMPLICIT_LE,)),),
    *, calling: str = "CLINIC", called: str = "GATEWAY", max_pdu: int = 16382,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) encoded by pynetdicom.

    ``contexts`` are (context ID, abstract syntax, transfer syntaxes); IDs are
    passed through as given, so even or duplicate ones can be proposed.
    """
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = IMPLEMENTATION_UID
    primitive.user_information = [length, implementation]
    definitions = []
    for context_id, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx._context_id = context_id  # the setter refuses even IDs: bypass it on purpose
        cx._abstract_syntax = abstract
        cx._transfer_syntax = list(syntaxes)
        definitions.append(cx)
    primitive.presentation_context_definition_list = definitions
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def release_rq() -> bytes:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""
    return bytes(A_RELEASE_RQ().encode())


def abort(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8)."""
    rq = A_ABORT_RQ()
    rq.source = source
    rq.reason_diagnostic = reason
    return bytes(rq.encode())


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """Arbitrary PDU framing: type, reserved byte, a 4-byte length (the body's unless given)."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def _pdata(primitives: Iterable[P_DATA]) -> list[bytes]:
    encoded = []
    for primitive in primitives:
        tf = P_DATA_TF()
        tf.from_primitive(primitive)
        encoded.append(bytes(tf.encode()))
    return encoded


def echo_rq(context_id: int = 1, max_pdu: int = 16382) -> list[bytes]:
    """A C-ECHO-RQ (PS3.7 9.3.5) as the P-DATA-TF PDUs pynetdicom would send."""
    primitive = C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = VERIFICATION
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return _pdata(message.encode_msg(context_id, max_pdu))


def store_rq(ds: Dataset, encoded: bytes, context_id: int = 1,
             max_pdu: int = 16382) -> list[bytes]:
    """A C-STORE-RQ (PS3.7 9.3.1) with ``encoded`` as its dataset, as P-DATA-TF PDUs."""
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return _pdata(message.encode_msg(context_id, max_pdu))


@dataclass(frozen=True)
class Reply:
    """One PDU the node sent, decoded by pynetdicom (``decoded``) with its raw bytes."""

    pdu_type: int
    raw: bytes
    decoded: object

    @property
    def rejection(self) -> tuple[int, int, int]:
        """An A-ASSOCIATE-RJ's (result, source, reason/diag.) (PS3.8 Table 9-21)."""
        rj = self.decoded
        assert isinstance(rj, A_ASSOCIATE_RJ), f"expected an A-ASSOCIATE-RJ, got {self}"
        return (rj.result, rj.source, rj.reason_diagnostic)

    @property
    def abort(self) -> tuple[int, int]:
        """An A-ABORT's (source, reason/diag.) (PS3.8 Table 9-26)."""
        ab = self.decoded
        assert isinstance(ab, A_ABORT_RQ), f"expected an A-ABORT, got {self}"
        return (ab.source, ab.reason_diagnostic)

    @property
    def context_results(self) -> dict[int, int]:
        """An A-ASSOCIATE-AC's presentation context results by ID (PS3.8 Table 9-18)."""
        ac = self.decoded
        assert isinstance(ac, A_ASSOCIATE_AC), f"expected an A-ASSOCIATE-AC, got {self}"
        return {cx.context_id: cx.result for cx in ac.presentation_context}

    def __str__(self) -> str:
        return f"PDU 0x{self.pdu_type:02X} ({type(self.decoded).__name__}, {len(self.raw)} bytes)"


class Closed:
    """The node closed the connection (no further PDU)."""

    pdu_type = None

    def __repr__(self) -> str:
        return "Closed()"


class RawPeer:
    """A TCP connection to the node that sends bytes as given and decodes what comes back."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, *chunks: bytes) -> None:
        """Send each chunk; a node that has already closed is not an error here."""
        try:
            for chunk in chunks:
                self.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _read(self, count: int, deadline: float) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete reply within {self.timeout}s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(count - len(data))
            except ConnectionResetError:
                return None
            except socket.timeout as exc:
                raise TimeoutError(f"no complete reply within {self.timeout}s") from exc
            if not chunk:
                return None
            data.extend(chunk)
        return bytes(data)

    def receive(self, timeout: float | None = None) -> Reply | Closed:
        """The next PDU, or :class:`Closed`; TimeoutError when neither comes in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        header = self._read(6, deadline)
        if header is None:
            return Closed()
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read(length, deadline)
        if body is None:
            return Closed()
        raw = header + body
        decoder = _DECODERS.get(pdu_type)
        if decoder is None:
            return Reply(pdu_type, raw, None)
        decoded = decoder()
        decoded.decode(raw)
        return Reply(pdu_type, raw, decoded)

    def receive_until_closed(self, timeout: float | None = None) -> list[Reply]:
        """Every PDU until the node closes the connection (TimeoutError if it does not)."""
        replies: list[Reply] = []
        while True:
            reply = self.receive(timeout)
            if isinstance(reply, Closed):
                return replies
            replies.append(reply)


# -- checks shared by the fault tests --------------------------------------------------------

#: one-second timeouts, so that cases that wait on them run in seconds
FAST = {"limits.acse_timeout": 1, "limits.dimse_timeout": 1, "limits.network_timeout": 1}


def dimse_status(reply: Reply | Closed) -> int | None:
    """The Status (0000,0900) of a DIMSE response that fits in one P-DATA-TF, else None."""
    if not isinstance(reply, Reply) or not isinstance(reply.decoded, P_DATA_TF):
        return None
    # each PDV: a message control header byte, then the command set (PS3.8 E.2)
    command = b"".join(item.data[1:] for item in reply.decoded.presentation_data_value_items)
    return int(decode(BytesIO(command), True, True).Status)


def echo_works(port: int) -> bool:
    """A normal association: A-ASSOCIATE-AC, C-ECHO answered 0x0000, A-RELEASE-RP."""
    with RawPeer(port) as peer:
        peer.send(associate_rq())
        ac = peer.receive()
        if not isinstance(ac, Reply) or ac.pdu_type != 0x02 or ac.context_results != {1: 0}:
            return False
        peer.send(*echo_rq())
        status = dimse_status(peer.receive())
        peer.send(release_rq())
        return status == 0x0000 and getattr(peer.receive(), "pdu_type", None) == 0x06


#: thread pools the node keeps once started, bounded by their own size (storage/_fsutil.py)
_POOLED_THREADS = ("storage-io",)


def resources() -> tuple[int, int]:
    """This process's threads (less the bounded pools) and open descriptors (RELIABILITY I4)."""
    threads = [t for t in threading.enumerate() if not t.name.startswith(_POOLED_THREADS)]
    return len(threads), len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def warmed_up(node: Any) -> Any:
    """The node after one echo, with its ``baseline`` of threads and descriptors.

    Nodes under test often run with one-second timeouts: on a loaded machine the very first
    association (imports, first connections) can outlast them, so the warm-up may retry."""
    wait_until(lambda: echo_works(node.port), timeout=20, what="a first echo answered")
    time.sleep(0.2)
    node.baseline = resources()
    return node


def recovered(node: Any, timeout: float = 10.0) -> None:
    """The node still serves an echo, and threads and descriptors return to the baseline.

    The database pool keeps up to its configured size of connections that a burst opened
    (bounded by configuration, not by the peers); it is emptied before counting.
    """
    assert echo_works(node.port)
    node.app.engine.dispose()
    threads, fds = node.baseline
    wait_until(lambda: resources()[0] <= threads and resources()[1] <= fds, timeout=timeout,
               what=f"threads and fds back to {node.baseline}: {describe_resources()}")


def describe_resources() -> str:
    """The live threads and open descriptors, for a failure message."""
    frames = sys._current_frames()
    names = sorted(f"{t.name} ({type(t).__name__}) at "
                   f"{' / '.join(x.strip() for x in traceback.format_stack(frames[t.ident])[-3:])}"
                   if t.ident in frames else t.name
                   for t in threading.enumerate())
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return f"threads={names} fds={sorted(targets)}"


def closed_within(peer: RawPeer, seconds: float) -> list[Reply]:
    """What the node sends before it closes the connection, failing if it does not in time."""
    started = time.monotonic()
    replies = peer.receive_until_closed(timeout=seconds)
    assert time.monotonic() - started < seconds, "the node did not close in time"
    return replies
