"""gateway.reactorpause: a response always reaches the sender, never the association's reactor.

The race needs the reactor to be slow to run after a ``send_*`` released
it and the sender slow to collect its response, which a loaded machine
makes likely and a test makes certain: the checkpoint used here sleeps
after each of the reactor's waits, and the sender sleeps before it takes
a response, as if each waited that long for the interpreter lock. A pynetdicom Storage
SCP on a free loopback port answers each C-STORE at once. With pynetdicom's
own checkpoint (an ``Event``), the reactor then takes a response meant for
the sender, which hears nothing until ``dimse_timeout``; with
:class:`gateway.reactorpause.Checkpoint`, every C-STORE gets its answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway import reactorpause
from gateway.tls import close_transport
from tests.corpus import make_ct_series

#: how long the reactor takes to run again after its checkpoint is set
_WAKE_DELAY = 0.3
#: how long the sender takes to collect a response (the reactor looks in between)
_COLLECT_DELAY = 0.6


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(reactorpause.CHECKED_PYNETDICOM + "."), (
        f"gateway/reactorpause.py was written for pynetdicom "
        f"{reactorpause.CHECKED_PYNETDICOM}, this is {pynetdicom.__version__}: re-read "
        "Association._run_reactor and how the send_* methods pause it")
    checkpoint = Association.__init__.__code__.co_names
    assert "_reactor_checkpoint" in checkpoint and "_is_paused" in checkpoint


class _SlowWake:
    """A checkpoint whose reactor is slow to run after it was released."""

    def wait(self, timeout: float | None = None) -> bool:
        blocked = not self.is_set()
        woken: bool = super().wait(timeout)
        if blocked:
            time.sleep(_WAKE_DELAY)
        return woken


class _SlowPlain(_SlowWake, threading.Event):
    """pynetdicom's checkpoint, with a slow reactor."""


class _SlowFixed(_SlowWake, reactorpause.Checkpoint):
    """The adapter's checkpoint, with the same slow reactor."""


@pytest.fixture
def scp() -> Iterator[int]:
    ae = AE(ae_title="SINK")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server: ThreadedAssociationServer = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def _store(port: int, files: list[Path], checkpoint: type[threading.Event]) -> list[int | None]:
    """C-STORE ``files`` on one association; each status, None where no response came."""

    def slow_reactor(event: Any) -> None:
        event.assoc._reactor_checkpoint = (checkpoint(event.assoc)
                                           if checkpoint is _SlowFixed else checkpoint())
        event.assoc._reactor_checkpoint.set()
        dimse = event.assoc.dimse
        collect = dimse.get_msg

        def slow_collect(block: bool = False) -> Any:
            if block:
                time.sleep(_COLLECT_DELAY)
            return collect(block)

        dimse.get_msg = slow_collect

    ae = AE(ae_title="CLINIC")
    ae.dimse_timeout = 2
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SINK",
                         evt_handlers=[(evt.EVT_CONN_OPEN, slow_reactor)])
    assert assoc.is_established
    statuses: list[int | None] = []
    try:
        for path in files:
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else None)
            if statuses[-1] is None:
                break  # pynetdicom aborts the association when no response came
    finally:
        if assoc.is_established:
            assoc.release()
        close_transport(assoc)
    return statuses


def test_with_pynetdicoms_checkpoint_the_reactor_takes_a_response(
        scp: int, tmp_path: Path) -> None:
    # this documents the race the adapter closes: should it stop failing, pynetdicom
    # fixed it, and gateway/reactorpause.py can go
    files = make_ct_series(tmp_path / "ct", 6, rows=32, columns=32)
    statuses = _store(scp, files, _SlowPlain)
    assert None in statuses, statuses


def test_with_the_adapter_every_c_store_gets_its_response(scp: int, tmp_path: Path) -> None:
    files = make_ct_series(tmp_path / "ct", 6, rows=32, columns=32)
    statuses = _store(scp, files, _SlowFixed)
    assert statuses == [0x0000] * 6


def _associate_with_adapter(port: int) -> Association:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title="SINK",
                        evt_handlers=[(evt.EVT_CONN_OPEN, reactorpause.install)])


def test_a_clear_after_the_association_ended_does_not_wait(
        scp: int, tmp_path: Path) -> None:
    assoc = _associate_with_adapter(scp)
    assert assoc.is_established and isinstance(assoc._reactor_checkpoint,
                                               reactorpause.Checkpoint)
    files = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32)
    assert [int(assoc.send_c_store(path).Status) for path in files] == [0, 0]
    assoc.release()
    close_transport(assoc)
    started = time.monotonic()
    assoc._reactor_checkpoint.clear()  # the reactor has ended: nothing to wait for
    assert time.monotonic() - started < 0.5


def test_a_hold_parks_the_reactor_once_for_many_requests_then_lets_it_run(
        scp: int, tmp_path: Path) -> None:
    assoc = _associate_with_adapter(scp)
    assert assoc.is_established
    checkpoint = assoc._reactor_checkpoint
    files = make_ct_series(tmp_path / "ct", 8, rows=32, columns=32)
    try:
        with reactorpause.held(assoc):
            parked = checkpoint._entries
            assert [int(assoc.send_c_store(path).Status) for path in files] == [0] * 8
            # each send_* cleared and set the checkpoint; the reactor never ran in between
            assert checkpoint._entries == parked and not checkpoint.is_set()
        time.sleep(0.2)
        assert checkpoint.is_set() and checkpoint._entries > parked + 10, "reactor not running"
    finally:
        assoc.release()
        close_transport(assoc)
    assoc.join(timeout=5)
    assert assoc.is_released and not assoc.is_alive()
