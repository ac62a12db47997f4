"""Receiving processes: the listener's port served from every core.

``serve`` with ``listener.processes`` = N runs the listener in N processes:
itself and N - 1 children started here, all bound to the same port (and to
the TLS port) with ``SO_REUSEPORT`` (:mod:`gateway.reuseport`). The kernel
spreads incoming connections over them; an association lives in the process
that accepted it, which answers every service the node offers (C-ECHO,
C-STORE, C-FIND, C-MOVE, C-GET, Storage Commitment reports). They share
nothing in memory, only what already makes the node's parts safe in any
number:

- the spool (PS3.4 B.2.3 Success is sent once the bytes are durable there,
  by whichever process received them; a spool entry is an atomic rename);
- the database (audit records, commitment results, queries; each process has
  its own engine and its own audit writer);
- the ingest workers' doorbell: a child cannot ring the parent's pipes, so it
  writes one byte to a pipe of its own, and a relay thread of the parent rings
  the workers (:class:`ReceiverProcesses`).

Each process answers ``limits.max_associations`` / N associations (rounded
up): the node as a whole stays near the configured figure.

Lifetime, as for the ingest workers (:mod:`gateway.workers`): a child dies
with its parent (``PR_SET_PDEATHSIG``, and end-of-file on its stop pipe); on
``stop()`` each child stops listening, aborts what it still serves, writes
the audit records it holds and exits; a child that dies on its own is
replaced by the supervisor, after the partial receives it left in its own
``receiving/rN`` folder are removed (what the start-up repair does for the
whole node). Its acknowledged instances are in the spool: nothing is lost.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import select
import signal
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from config import Settings

from .app import App, build_app
from .audittrail import AuditWriter
from .doorbell import Bell
from .errors import GatewayError
from .logs import configure_logging
from .reuseport import close_listener
from .scp import build_ae, open_listeners
from .tls import server_context
from .workers import die_with_parent

__all__ = ["ReceiverProcesses", "receiving_dir"]

logger = logging.getLogger(__name__)

_SUPERVISE_SECONDS = 1.0
_RING = b"\x01"


def receiving_dir(app: App, index: int = 0) -> Path:
    """Where pynetdicom streams the datasets of receiving process ``index`` (0: ``serve``
    itself): on the spool's filesystem, so that a rename moves them into the spool."""
    root = app.spool.root / "receiving"
    path = root if index == 0 else root / f"r{index}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_partial(folder: Path) -> int:
    """Remove the partial receives left in ``folder``; how many there were."""
    swept = 0
    for leftover in folder.glob("*.dcm"):
        leftover.unlink(missing_ok=True)
        swept += 1
    return swept


class _Ring:
    """A child's wake: one byte on its pipe to the parent, never blocking."""

    def __init__(self, writer: Connection) -> None:
        self._fd = writer.fileno()
        os.set_blocking(self._fd, False)

    def set(self) -> None:
        try:
            os.write(self._fd, _RING)
        except (BlockingIOError, BrokenPipeError):
            pass  # already rung, or the parent is gone


def _go(stop: Connection) -> bool:
    """Wait for the parent's word to listen (one byte); ``False`` on end-of-file."""
    while True:
        select.select([stop.fileno()], [], [])
        try:
            return bool(os.read(stop.fileno(), 1))
        except BlockingIOError:
            continue


def _receiver(settings: Settings, parent: int, log_level: str, index: int, count: int,
              stop: Connection, ring: Connection) -> None:
    """A child's body: listen on the shared ports until the parent hangs up."""
    die_with_parent(parent, f"dg-receive-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure_logging(0, base_level=log_level)
    app = build_app(settings, os.environ)
    app.wake = _Ring(ring)
    tempfile.tempdir = str(receiving_dir(app, index))
    audit = AuditWriter(app)
    audit.start()
    context = server_context(settings.tls) if settings.tls.enabled else None
    ae = build_ae(app, receivers=count)
    app.wake.set()  # first ring: built, ready to listen
    if not _go(stop):  # the parent hung up before giving the word
        audit.stop()
        os._exit(0)
    servers = open_listeners(app, ae, context, shared=True)
    logger.info("receiver index=%d pid=%d listening", index, os.getpid())
    app.wake.set()  # second ring: listening
    gc.freeze()  # start-up's objects live as long as the process (see gateway.cli.serve)
    bell = Bell(stop)
    try:
        while bell.open and os.getppid() == parent:
            bell.wait(_SUPERVISE_SECONDS)
    finally:
        for server in servers:
            if server is not None:
                close_listener(server)
        audit.stop()
        bell.close()
        app.close()
        logging.shutdown()
    os._exit(0)  # everything is closed: skip the interpreter's teardown (gateway.workers)


class ReceiverProcesses:
    """The ``count`` - 1 receiving children of ``serve`` (see the module docstring).

    Parameters
    ----------
    app : App
        The parent's app: its settings, and its ``wake``, which the relay rings.
    count : int
        How many processes receive, ``serve`` included (which listens once these do).
    """

    def __init__(self, app: App, count: int) -> None:
        self._app = app
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._children: dict[int, tuple[BaseProcess, Connection]] = {}
        self._rings: list[Connection] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._relay, name="receiver-relay", daemon=True),
                         threading.Thread(target=self._supervise, name="receiver-supervisor",
                                          daemon=True)]

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [p.pid for p, _ in self._children.values() if p.pid is not None]

    def start(self, timeout: float = 120.0) -> None:
        """Start the children and wait until each listens (its first ring), so that what
        ``serve`` then measures or announces is the node at its full size."""
        with self._lock:
            for index in range(1, self._count):
                self._spawn(index, go=False)
        deadline = time.monotonic() + timeout
        heard: dict[Connection, int] = {}  # rings counted per child while starting
        ready = self._await_rings(heard, 1, deadline)  # each built (the slow part: imports)
        if ready:
            for _, stop_writer in self._children.values():  # then all listen at once
                os.write(stop_writer.fileno(), _RING)
            ready = self._await_rings(heard, 2, deadline)
        if not ready:
            self.stop()
            raise GatewayError(f"the {self._count - 1} receiving processes did not all start "
                               f"(see the log)")
        logger.info("receivers processes=%d pids=%s", self._count, [os.getpid(), *self.pids])
        for thread in self._threads:
            thread.start()

    def _await_rings(self, heard: dict[Connection, int], count: int, deadline: float) -> bool:
        """Wait until every child rang ``count`` times in all (counted in ``heard``);
        ``False`` if one died or the deadline passed."""
        while any(heard.get(ring, 0) < count for ring in self._rings):
            if time.monotonic() > deadline or any(
                    not process.is_alive() for process, _ in self._children.values()):
                return False
            for ring in select.select(self._rings, [], [], 0.5)[0]:
                try:
                    heard[ring] = heard.get(ring, 0) + len(os.read(ring.fileno(), 16))
                except BlockingIOError:
                    pass
        return True

    def _spawn(self, index: int, go: bool = True) -> None:
        level = logging.getLevelName(logging.getLogger("gateway").getEffectiveLevel())
        stop_reader, stop_writer = self._context.Pipe(duplex=False)
        ring_reader, ring_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_receiver, name=f"receiver-{index}", daemon=True,
            args=(self._app.settings, os.getpid(), str(level), index, self._count, stop_reader,
                  ring_writer))
        process.start()
        stop_reader.close()  # the child has its own copies
        ring_writer.close()
        os.set_blocking(ring_reader.fileno(), False)
        self._children[index] = (process, stop_writer)
        self._rings.append(ring_reader)
        if go:  # a replacement listens as soon as it is ready
            os.write(stop_writer.fileno(), _RING)

    def _relay(self) -> None:
        """Ring the ingest workers whenever a child spooled something."""
        while not self._stopping.is_set():
            with self._lock:
                rings = list(self._rings)
            readable = select.select(rings, [], [], _SUPERVISE_SECONDS)[0] if rings else []
            if not rings:
                self._stopping.wait(_SUPERVISE_SECONDS)
            rung = False
            for ring in readable:
                try:
                    data = os.read(ring.fileno(), 4096)
                except BlockingIOError:
                    continue
                except OSError:  # closed meanwhile by the supervisor
                    data = b""
                if data:
                    rung = True
                    continue
                with self._lock:  # end-of-file: that child is gone
                    if ring in self._rings:
                        self._rings.remove(ring)
                        ring.close()
            if rung:
                self._app.wake.set()

    def _supervise(self) -> None:
        while not self._stopping.wait(_SUPERVISE_SECONDS):
            with self._lock:
                if self._stopping.is_set():
                    return
                for index, (process, stop_writer) in list(self._children.items()):
                    if process.is_alive():
                        continue
                    stop_writer.close()
                    swept = sweep_partial(receiving_dir(self._app, index))
                    logger.error("receiver index=%d pid=%s exited with %s: restarted, "
                                 "partial_receives=%d", index, process.pid, process.exitcode,
                                 swept)
                    self._spawn(index)

    def stop(self, timeout: float = 15.0) -> None:
        """Hang up on every child, wait for them to exit; kill what does not."""
        self._stopping.set()
        with self._lock:
            children = list(self._children.values())
            for _, stop_writer in children:
                stop_writer.close()
        for process, _ in children:
            process.join(timeout)
        for process, _ in children:
            if process.is_alive():
                logger.warning("receiver pid=%s did not stop: killed", process.pid)
                process.kill()
                process.join(5)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        with self._lock:
            for ring in self._rings:
                ring.close()
            self._rings.clear()
