"""P-DATA written by the thread that sends the message: one DUL method replaced per association.

pynetdicom 3.0 sends every P-DATA-TF PDU through its DUL reactor: the
sending thread queues a primitive per PDU, and the reactor thread takes it
off the queue, runs it through the state machine (event 9, action DT-1,
which leaves the state at Sta6) and writes that one PDU. To a destination
that accepts 16 KB PDUs (DCMTK's and Orthanc's default), a 0.5 MB instance
is 32 such hand-overs between two threads that take turns on the GIL: most
of the CPU a forwarded instance costs, and several times what the
destination needs to store it.

:func:`install` (an ``EVT_CONN_OPEN`` handler, so it runs before the
association is negotiated) replaces ``send_pdu`` on that association's DUL.
While the association is established (Sta6) and nothing is waiting in the
reactor's queue, a P-DATA primitive is encoded by pynetdicom's own
``P_DATA_TF`` right away, in the sending thread, and PDUs are gathered and
written together (up to about 1 MB, and always at the last fragment of a
command or a data set, PS3.8 E.2), through pynetdicom's own socket wrapper.
Every other primitive (A-ASSOCIATE, A-RELEASE, A-ABORT) and any P-DATA in
another state goes the usual way, after what was gathered has been
written. The bytes on the wire are the ones pynetdicom would write (PS3.8
9.3.5); only the thread that writes them changes. The reactor's own writes
take the same lock, so PDUs never interleave. ``EVT_PDU_SENT`` is not
triggered for P-DATA sent this way (nothing here listens for it).

Written for pynetdicom 3.0 (``DULServiceProvider.send_pdu``/``_send``,
``state_machine.current_state``, ``to_provider_queue``); the tests pin
that version, check that the bytes are identical, and that an upgrade is
noticed. The change could be offered upstream as an option of the DUL.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

__all__ = ["CHECKED_PYNETDICOM", "DirectSend", "install"]

CHECKED_PYNETDICOM: Final = "3.0"
#: gathered PDU bytes written in one go
_GATHER_BYTES: Final = 1 << 20
#: PS3.8 E.2 message control header: bit 1 set on the last fragment
_LAST_FRAGMENT: Final = 0x02


class DirectSend:
    """The replacement of one DUL's ``send_pdu`` (see the module docstring)."""

    def __init__(self, dul: Any) -> None:
        self._dul = dul
        self._queued = dul.send_pdu
        self._reactor_send = dul._send
        self._lock = threading.Lock()
        self._gathered: list[bytes] = []
        self._size = 0
        dul._send = self._send_locked
        dul.send_pdu = self.send_pdu

    def send_pdu(self, primitive: Any) -> None:
        dul = self._dul
        if (not isinstance(primitive, P_DATA) or dul.state_machine.current_state != "Sta6"
                or not dul.to_provider_queue.empty()):
            self.flush()
            self._queued(primitive)
            return
        data = P_DATA_TF(primitive).encode()
        self._gathered.append(data)
        self._size += len(data)
        last = any(value[0] & _LAST_FRAGMENT for _, value in primitive.presentation_data_value_list)
        if last or self._size >= _GATHER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what was gathered (through pynetdicom's socket wrapper, under the lock)."""
        if not self._gathered:
            return
        data = b"".join(self._gathered) if len(self._gathered) > 1 else self._gathered[0]
        self._gathered, self._size = [], 0
        with self._lock:
            socket = self._dul.socket
            if socket is not None:
                socket.send(data)  # a failure puts Evt17 on the reactor's queue, as usual

    def _send_locked(self, pdu: Any) -> None:
        with self._lock:
            self._reactor_send(pdu)


def install(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: send this association's P-DATA directly."""
    DirectSend(event.assoc.dul)
