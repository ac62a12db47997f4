"""Ingest workers as processes: the de-identification runs on the other cores.

The receiving process keeps the network (pynetdicom's reactors, the
C-STORE handler that spools and answers) and nothing else; CPU-bound ingest
(parse, de-identify, write, index: :mod:`gateway.ingest`) runs in separate
processes, so that it no longer competes with the receiver for one
interpreter lock. Workers and receiver are coordinated only through what
already makes them safe in any number: the spool (a claim is an atomic
rename) and the database (one transaction per instance). A doorbell
(:mod:`gateway.doorbell`: one pipe per worker, safe when a worker is killed)
wakes idle workers as soon as something is spooled; they also look on
their own every second.

Processes are started with ``spawn`` (the parent has threads, so ``fork``
would copy locks held by them). Each worker builds its own
:class:`~gateway.app.App` from the parent's settings and environment.

Lifetime:

- a worker dies with its parent: on Linux through ``PR_SET_PDEATHSIG``
  (SIGKILL), elsewhere it reads end-of-file on its doorbell pipe or notices
  within a second that its parent changed.
  A ``kill -9`` of ``serve`` therefore leaves no worker behind that could
  race the restarted node's start-up repair;
- ``stop()`` hangs up the doorbell: each worker finishes the batch it
  holds and exits; those that do not within the timeout are killed;
- a worker that dies on its own (a crash, the out-of-memory killer) is
  noticed by a supervisor thread: every worker is stopped, the claims they
  held go back to the spool (:meth:`storage.spool.Spool.recover`, safe now
  that no worker is alive), and a fresh set starts. Nothing is lost; the
  entries are processed again, which is idempotent.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from config import Settings

from .app import App, build_app
from .doorbell import Bell, Doorbell
from .ingest import IngestReport, run_once
from .logs import configure_logging

__all__ = ["WorkerProcesses", "WorkerThreads", "die_with_parent"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_IDLE_SECONDS = 1.0
_BACKOFF_SECONDS = 5.0
_SUPERVISE_SECONDS = 1.0


def die_with_parent(parent: int, name: str) -> None:
    """Have the kernel kill this process when its parent dies (Linux); else rely on polling.

    ``name`` (15 bytes at most) becomes the process's name in ``ps``, ``top`` and
    ``/proc/PID/comm``, so that an operator tells the node's processes apart.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker(settings: Settings, parent: int, log_level: str, doorbell: Connection,
            index: int, ready: Connection) -> None:
    """A worker process's body: drain the spool, sleep until rung, until the parent hangs up."""
    die_with_parent(parent, f"dg-ingest-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    if settings.ingest.nice:
        os.nice(settings.ingest.nice)  # the receivers first (config.schema.IngestSettings)
    configure_logging(0, base_level=log_level)
    bell = Bell(doorbell)
    app = build_app(settings, os.environ)
    gc.freeze()  # start-up's objects live as long as the worker (see gateway.cli.serve)
    try:
        os.write(ready.fileno(), b"\x01")  # started: the parent may start listening
    except OSError:
        pass  # a replacement: nobody waits for it
    ready.close()
    try:
        while bell.open and os.getppid() == parent:
            bell.clear()  # before draining: a store that lands meanwhile rings the next wait
            if not bell.open:
                break
            try:
                report = run_once(app)
            except Exception:  # a worker never dies on one entry; it stays in the spool
                logger.exception("ingest worker error")
                report = IngestReport(retry=1)
            if report.retry:
                bell.wait(_BACKOFF_SECONDS)  # the database or the disk is failing
            elif report.total == 0:
                bell.wait(_IDLE_SECONDS)
    finally:
        bell.close()
        app.close()
        logging.shutdown()
    # Everything is closed and flushed: skip the interpreter's teardown of every module
    # (about a second of CPU), which only delays a stop or a restart of the workers.
    os._exit(0)


class WorkerProcesses:
    """``count`` ingest processes for one node, supervised (see the module docstring).

    Parameters
    ----------
    app : App
        The parent's app; its ``wake`` becomes the workers' doorbell.
    count : int
        How many processes.
    """

    def __init__(self, app: App, count: int) -> None:
        self._app = app
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self.wake = Doorbell(self._context)
        app.wake = self.wake
        self._processes: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, name="ingest-supervisor",
                                            daemon=True)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (for tests and the status line)."""
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self, timeout: float = 60.0) -> None:
        """Start the workers and wait (at most ``timeout`` seconds) until each is up, so that
        the node answers only once it can ingest (and no start-up competes with the first
        stores); one that dies starting is the supervisor's to replace."""
        with self._lock:
            ready = self._spawn()
        deadline = time.monotonic() + timeout
        while ready and time.monotonic() < deadline:
            for reader in select.select(ready, [], [], 0.5)[0]:
                ready.remove(reader)  # a byte, or end-of-file: that worker died starting
                reader.close()
        for reader in ready:
            reader.close()
        self._supervisor.start()

    def _spawn(self) -> list[Connection]:
        """Start ``count`` workers; the read ends of their start-up pipes."""
        level = logging.getLevelName(logging.getLogger("gateway").getEffectiveLevel())
        self._processes = []
        started = []
        for n in range(self._count):
            reader = self.wake.add()
            ready, ready_writer = self._context.Pipe(duplex=False)
            process = self._context.Process(
                target=_worker, name=f"ingest-{n}", daemon=True,
                args=(self._app.settings, os.getpid(), str(level), reader, n, ready_writer))
            process.start()
            reader.close()  # the worker has its own copy; the parent keeps only write ends
            ready_writer.close()
            self._processes.append(process)
            started.append(ready)
        logger.info("ingest workers=%d processes pids=%s", self._count, self.pids)
        return started

    def _halt(self, timeout: float) -> None:
        """Ask every worker to stop after its current batch; kill what does not."""
        self.wake.close()
        for process in self._processes:
            process.join(timeout)
        for process in self._processes:
            if process.is_alive():
                logger.warning("ingest worker pid=%s did not stop: killed", process.pid)
                process.kill()
                process.join(5)

    def _supervise(self) -> None:
        while not self._stopping.wait(_SUPERVISE_SECONDS):
            with self._lock:
                if self._stopping.is_set():
                    return
                dead = [p for p in self._processes if not p.is_alive()]
                if not dead:
                    continue
                for process in dead:
                    logger.error("ingest worker pid=%s exited with %s: restarting the workers",
                                 process.pid, process.exitcode)
                self._halt(30.0)
                recovered = self._app.spool.recover()
                logger.info("ingest restart spool_recovered=%d", recovered)
                for ready in self._spawn():
                    ready.close()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        with self._lock:
            self._halt(timeout)
        if self._supervisor.is_alive():
            self._supervisor.join(timeout)


class WorkerThreads:
    """``count`` ingest threads in this process (in-process nodes: tests, small set-ups)."""

    def __init__(self, app: App, count: int) -> None:
        self._app = app
        self._stop = threading.Event()
        self._wake = threading.Event()
        app.wake = self._wake
        self._threads = [
            threading.Thread(target=self._loop, name=f"ingest-{n}", daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        wake = self._wake
        while not self._stop.is_set():
            wake.clear()  # before draining: a store that lands meanwhile wakes the next wait
            try:
                report = run_once(self._app)
            except Exception:  # a worker never dies; the entry stays in the spool
                logger.exception("ingest worker error")
                report = IngestReport(retry=1)
            if report.retry:
                wake.wait(_BACKOFF_SECONDS)
            elif report.total == 0:
                wake.wait(_IDLE_SECONDS)
