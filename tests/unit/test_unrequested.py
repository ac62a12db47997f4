"""gateway.unrequested: the pynetdicom it was read from, and what it relies on."""

from __future__ import annotations

import inspect

import pynetdicom
from pynetdicom import fsm
from pynetdicom.association import Association

CHECKED_PYNETDICOM = "3.0"


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway.unrequested was written for pynetdicom {CHECKED_PYNETDICOM}, this is "
        f"{pynetdicom.__version__}: re-read fsm.AA_5 and Association.run_reactor")
    # AA-5 (Sta2 + Evt17) triggers EVT_CONN_CLOSE and stops the DUL, telling the user nothing
    aa5 = inspect.getsource(fsm.AA_5)
    assert "EVT_CONN_CLOSE" in aa5 and "to_user_queue" not in aa5
    # the acceptor reads None from the queue as its ACSE timeout: kill, close, return
    reactor = inspect.getsource(Association.run_reactor)
    assert "receive_pdu(wait=True, timeout=self.acse_timeout)" in reactor
    assert "if primitive is None:" in reactor
