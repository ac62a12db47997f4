"""Wake and stop ingest worker processes through one pipe each, safe against a killed worker.

A worker that is idle waits for the doorbell: the receiving process rings it
when something was spooled, so the instance is ingested at once rather than
at the next poll. A ``multiprocessing.Event`` cannot do this safely: its
``set()`` waits for every sleeper to acknowledge the wake-up, and a sleeper
killed while waiting (``kill -9``, the out-of-memory killer) never does, so
the next ``set()`` blocks forever, in the C-STORE handler and in the
supervisor that should replace the dead worker.

Here each worker owns the read end of a pipe of its own:

- :meth:`Doorbell.set` writes one byte to every worker's pipe without ever
  blocking: a full pipe already holds a wake-up, a closed one belongs to a
  dead worker; neither is an error;
- :meth:`Doorbell.close` closes the write ends: each worker reads end-of-file
  and stops after the batch it holds. The kernel does the same when the
  parent dies, so an orphaned worker stops too;
- :class:`Bell` is the worker's end: :meth:`Bell.wait` sleeps until a byte
  arrives or the timeout passes; :attr:`Bell.open` turns false on end-of-file.

A worker killed at any moment leaves nothing shared in a bad state: only its
own pipe, which the parent closes when it replaces the worker.
"""

from __future__ import annotations

import os
import select
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext

__all__ = ["Bell", "Doorbell"]

_RING = b"\x01"


class Doorbell:
    """The parent's side: one non-blocking write end per worker (see the module docstring)."""

    def __init__(self, context: SpawnContext) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._writers: list[Connection] = []

    def add(self) -> Connection:
        """A new pipe; returns the read end to hand to one worker process."""
        reader, writer = self._context.Pipe(duplex=False)
        os.set_blocking(writer.fileno(), False)
        with self._lock:
            self._writers.append(writer)
        return reader

    def set(self) -> None:
        """Wake every worker; never blocks."""
        with self._lock:
            for writer in self._writers:
                try:
                    os.write(writer.fileno(), _RING)
                except (BlockingIOError, BrokenPipeError):
                    pass  # already rung, or that worker is gone

    def close(self) -> None:
        """Tell every worker to stop (end-of-file on its pipe) and forget the pipes."""
        with self._lock:
            writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()


class Bell:
    """A worker's side: wait for a ring, or learn that the parent hung up."""

    def __init__(self, reader: Connection) -> None:
        self._reader = reader
        self._fd = reader.fileno()
        os.set_blocking(self._fd, False)
        self.open = True

    def clear(self) -> None:
        """Consume pending rings (before draining the spool: a later ring wakes the next wait)."""
        while self.open:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return
            if not data:
                self.open = False

    def wait(self, timeout: float) -> None:
        """Sleep until rung, hung up, or ``timeout`` seconds passed."""
        if self.open:
            readable, _, _ = select.select([self._fd], [], [], timeout)
            if readable:
                self.clear()

    def close(self) -> None:
        self._reader.close()
