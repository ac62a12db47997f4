"""RSS, threads and open descriptors of a process, before and after a fault (RELIABILITY I4).

``Usage.of(pid)`` reads ``/proc/PID/status`` (VmRSS, Threads) and
``/proc/PID/fd``, so it measures an in-process node (this process) and a
``dicom-gateway serve`` subprocess alike. ``Watch`` holds a baseline taken
after a warm-up and :meth:`Watch.settled` polls, after the fault, until each
figure is back within its tolerance, failing with both samples:

- threads: the tolerance covers bounded pools that start threads on first
  use (the file store's eight ``storage-io`` threads), not one per fault;
- descriptors: the database pool's connections (disposed first when the
  test passes its engine) and a few logging and pipe descriptors;
- RSS: the allocator keeps freed arenas, so RSS never drops to the byte;
  the tolerance is what a bounded receive may keep (pydicom and pynetdicom
  buffers), far below what building a fault's data in memory would take.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Usage", "Watch", "close_idle_connections", "watched"]


@dataclass(frozen=True)
class Usage:
    """One sample of a process's resources."""

    rss_kib: int
    threads: int
    fds: int

    @classmethod
    def of(cls, pid: int | None = None) -> Usage:
        """Sample ``pid`` (this process when None) from ``/proc``."""
        proc = Path(f"/proc/{pid or os.getpid()}")
        fields = dict(line.split(":", 1) for line in
                      (proc / "status").read_text().splitlines() if ":" in line)
        return cls(rss_kib=int(fields["VmRSS"].split()[0]),
                   threads=int(fields["Threads"]),
                   fds=len(os.listdir(proc / "fd")))


@dataclass
class Watch:
    """A baseline of one process and the tolerances it must come back within."""

    pid: int | None = None
    threads: int = 10
    fds: int = 8
    rss_kib: int = 48 * 1024
    before_settle: Callable[[], None] | None = None
    baseline: Usage | None = None

    def start(self) -> Usage:
        self.baseline = Usage.of(self.pid)
        return self.baseline

    def within(self, now: Usage) -> bool:
        base = self.baseline
        assert base is not None, "start() the watch first"
        return (now.threads <= base.threads + self.threads and now.fds <= base.fds + self.fds
                and now.rss_kib <= base.rss_kib + self.rss_kib)

    def settled(self, timeout: float = 10.0) -> Usage:
        """Wait until the process is back within tolerance of its baseline; the last sample."""
        if self.before_settle is not None:
            self.before_settle()
        deadline = time.monotonic() + timeout
        now = Usage.of(self.pid)
        while not self.within(now):
            if time.monotonic() > deadline:
                pytest.fail(f"resources not back to baseline after {timeout:.0f}s: "
                            f"baseline {self.baseline}, now {now} (tolerance threads "
                            f"+{self.threads}, fds +{self.fds}, rss +{self.rss_kib} KiB)")
            time.sleep(0.1)
            now = Usage.of(self.pid)
        return now


def close_idle_connections(engine: Any) -> None:
    """Close the pool's idle connections and keep the pool.

    ``Engine.dispose()`` would also drop the pool under the node's threads: a
    connection checked out at that moment (the clock's, the audit writer's)
    goes back to the discarded pool, stays open, and its ResourceWarning
    surfaces in whichever test runs when the collector finds it.
    """
    pool = engine.pool
    for _ in range(pool.checkedin()):
        connection = pool.connect()  # an idle one (or a new one, closed as well)
        connection.invalidate()  # closes its database connection; the pool opens afresh
        connection.close()


@contextmanager
def watched(node: Any = None, *, pid: int | None = None, **tolerances: int
            ) -> Iterator[Watch]:
    """A :class:`Watch` started on entry and settled on a clean exit.

    With ``node`` (an in-process :class:`gateway.node.Node`), its database
    pool is emptied before settling: the pool keeps up to its configured
    size of connections (bounded by configuration, not by the peers).
    """
    before = (lambda: close_idle_connections(node.app.engine)) if node is not None else None
    watch = Watch(pid=pid, before_settle=before, **tolerances)
    watch.start()
    yield watch
    watch.settled()
