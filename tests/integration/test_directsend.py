"""gateway.directsend: the same bytes on the wire, written by the sending thread.

A pynetdicom Storage SCP on a free loopback port, accepting 4 KB PDUs so that
every instance is many P-DATA-TF PDUs, records every byte it receives
(``EVT_DATA_RECV``). The same instances are sent twice, once through
pynetdicom's reactor and once with :func:`gateway.directsend.install`: the
byte streams after the association's negotiation must be identical, and
with the adapter no P-DATA PDU may pass through the reactor (it alone
triggers ``EVT_PDU_SENT``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway import directsend
from tests.corpus import make_ct_series


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(directsend.CHECKED_PYNETDICOM + "."), (
        f"gateway/directsend.py was written for pynetdicom {directsend.CHECKED_PYNETDICOM}, "
        f"this is {pynetdicom.__version__}: re-read DULServiceProvider.send_pdu, _send and "
        "run_reactor, and the DT-1 action of the state machine")
    for name in ("send_pdu", "_send"):
        assert callable(getattr(DULServiceProvider, name))


class _Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.stored = 0

    def on_data(self, event: Any) -> None:
        self.received.append(bytes(event.data))

    def on_store(self, event: Any) -> int:
        event.dataset  # decode it: a wrong byte would fail here
        self.stored += 1
        return 0x0000


@pytest.fixture
def sink() -> Iterator[tuple[_Sink, int]]:
    recorder = _Sink()
    ae = AE(ae_title="SINK")
    ae.maximum_pdu_size = 4096
    ae.add_supported_context(CTImageStorage)
    server: ThreadedAssociationServer = ae.start_server(
        ("127.0.0.1", 0), block=False,
        evt_handlers=[(evt.EVT_DATA_RECV, recorder.on_data), (evt.EVT_C_STORE, recorder.on_store)])
    try:
        yield recorder, int(server.server_address[1])
    finally:
        server.shutdown()


def _send(port: int, files: list[Path], direct: bool) -> tuple[int, int]:
    """Store ``files`` (two as paths, the rest as datasets); (P-DATA PDUs via the reactor, OK)."""
    through_reactor = 0

    def count(event: Any) -> None:
        nonlocal through_reactor
        if isinstance(event.pdu, P_DATA_TF):
            through_reactor += 1

    handlers: list[Any] = [(evt.EVT_PDU_SENT, count)]
    if direct:
        handlers.append((evt.EVT_CONN_OPEN, directsend.install))
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # as the files are
    assoc = ae.associate("127.0.0.1", port, ae_title="SINK", evt_handlers=handlers)
    assert assoc.is_established
    ok = 0
    try:
        for index, path in enumerate(files):
            outgoing: Any = path if index < 2 else dcmread(path)
            status = assoc.send_c_store(outgoing)
            ok += int(status.Status == 0x0000)
    finally:
        assoc.release()
    return through_reactor, ok


def _pdus(stream: bytes) -> list[tuple[int, bytes]]:
    """Split a byte stream into PDUs (PS3.8 9.3.1: type, reserved, 4-byte length, body)."""
    pdus, offset = [], 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset + 2:offset + 6], "big")
        pdus.append((stream[offset], stream[offset + 6:offset + 6 + length]))
        offset += 6 + length
    return pdus


def test_the_bytes_are_pynetdicoms_and_the_reactor_writes_no_p_data(
        sink: tuple[_Sink, int], tmp_path: Path) -> None:
    recorder, port = sink
    files = make_ct_series(tmp_path / "ct", 4, rows=128, columns=128)
    reactor_pdata, ok = _send(port, files, direct=False)
    assert ok == 4 and reactor_pdata > 4 * 8, reactor_pdata  # 32 KB each, 4 KB PDUs
    plain = [pdu for pdu in _pdus(b"".join(recorder.received)) if pdu[0] != 0x01]
    recorder.received.clear()
    reactor_pdata, ok = _send(port, files, direct=True)
    assert ok == 4 and recorder.stored == 8
    assert reactor_pdata == 0, "P-DATA went through pynetdicom's reactor despite the adapter"
    direct = [pdu for pdu in _pdus(b"".join(recorder.received)) if pdu[0] != 0x01]
    # every PDU after the A-ASSOCIATE-RQ, P-DATA-TF and A-RELEASE-RQ alike, byte for byte
    assert direct == plain
