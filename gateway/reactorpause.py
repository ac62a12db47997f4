"""A pause of pynetdicom's association reactor that holds: no response is taken by the reactor.

On an association we requested, pynetdicom 3.0 runs a reactor thread
(``Association._run_reactor``) that serves what the peer sends unasked
(an N-EVENT-REPORT of Storage Commitment, PS3.4 J.3.3, say). Before a
``send_*`` method sends a request, it pauses that reactor so that the
response (PS3.7 9.1, 10.1: the answer to each request comes back on the
same association) reaches the sender and not the reactor: it clears
``_reactor_checkpoint`` and waits for ``_is_paused``. The reactor sets
``_is_paused`` just before it waits on the checkpoint and resets it just
after, so right after a ``send_*`` released the reactor, ``_is_paused``
still reads true while the woken reactor waits for the interpreter lock.
When the sender's next request goes out in that moment, the reactor may
then take the response itself: pynetdicom logs "Received unexpected
C-STORE service message" and the sender hears nothing until
``dimse_timeout`` (a minute) has passed. On a loaded machine this happens
to about one forwarding job in ten.

:func:`install` (an ``EVT_CONN_OPEN`` handler, before the association is
negotiated) gives the association a :class:`Checkpoint` whose ``clear()``
returns only once the reactor has entered ``wait()`` after the clear: it
is then blocked until the sender sets the checkpoint again, so the
response can only reach the sender. A reactor that is not running (the
association is not established yet, or has ended) is not waited for, nor
is a ``clear()`` from the reactor thread itself (pynetdicom releases from
there on a network timeout).

Written for pynetdicom 3.0 (``Association._reactor_checkpoint``, a
:class:`threading.Event` that only the reactor waits on); a test pins the
version and reproduces the race with the plain event. The change could
be offered upstream: the reactor could acknowledge the pause itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

__all__ = ["CHECKED_PYNETDICOM", "Checkpoint", "held", "install"]

CHECKED_PYNETDICOM: Final = "3.0"
#: how often a paused sender looks whether the reactor is still running
_LOOK_SECONDS: Final = 0.05


class Checkpoint(threading.Event):
    """``_reactor_checkpoint`` of one association (see the module docstring)."""

    def __init__(self, assoc: Any) -> None:
        super().__init__()
        self._assoc = assoc
        self._lock = threading.Condition()
        #: how many times the reactor has entered ``wait()``, and whether it is in it now
        self._entries = 0
        self._inside = False
        self._held = False
        super().set()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the reactor parked for the block (see the module docstring)."""
        self.clear()
        self._held = True
        try:
            yield
        finally:
            self._held = False
            super().set()

    def set(self) -> None:
        if not self._held:
            super().set()

    def wait(self, timeout: float | None = None) -> bool:
        with self._lock:
            # counted under the lock that clear() takes: an entry counted after a clear
            # sees the flag cleared and blocks until the next set()
            self._entries += 1
            self._inside = True
            self._lock.notify_all()
        try:
            return super().wait(timeout)
        finally:
            self._inside = False

    def clear(self) -> None:
        if self._held:
            return  # parked since the hold began
        with self._lock:
            was_set = self.is_set()
            super().clear()
            entered = self._entries
            if threading.current_thread() is self._assoc or (not was_set and self._inside):
                return  # the reactor itself, or a reactor already blocked by an earlier clear
            while self._entries == entered and self._reactor_running():
                self._lock.wait(_LOOK_SECONDS)

    def _reactor_running(self) -> bool:
        assoc = self._assoc
        return bool(assoc.is_alive() and assoc.is_established and not assoc._kill)


@contextmanager
def held(assoc: Any) -> Iterator[None]:
    """``assoc``'s reactor parked for the block, where it has a :class:`Checkpoint`."""
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if not isinstance(checkpoint, Checkpoint):
        yield
        return
    with checkpoint.hold():
        yield


def install(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: give this association a :class:`Checkpoint`."""
    event.assoc._reactor_checkpoint = Checkpoint(event.assoc)
