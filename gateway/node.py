"""A running node: the listener, the ingest workers, the clock, and their start-up repair.

``Node(app).start()`` is what ``dicom-gateway serve`` runs and what the
integration tests start on a free loopback port. Before it listens it
repairs what a crash may have left (durability contract 2): pynetdicom's
partial receive files and spool temporaries are swept, claimed spool entries
go back to the spool, and the file store's temporaries are removed; the
workers then process the spool from the oldest entry. Starting and stopping
are audited (``node-start``, ``node-stop``: PS3.15 A.5.3.1 Application
Activity).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pynetdicom.transport import ThreadedAssociationServer

from .app import App
from .audittrail import AuditWriter, record_quietly
from .clock import Clock
from .errors import GatewayError
from .policy import is_loopback
from .receivers import ReceiverProcesses, receiving_dir, sweep_partial
from .reuseport import claim_port, close_listener, supported
from .scp import build_ae, open_listeners
from .tls import server_context
from .workers import WorkerProcesses, WorkerThreads

__all__ = ["Node"]

logger = logging.getLogger(__name__)


class Node:
    """The listener and the ingest workers of one :class:`~gateway.app.App`.

    With ``worker_processes`` (what ``serve`` runs) the workers are separate
    processes (:mod:`gateway.workers`), so that de-identification does not
    compete with the receiver for one interpreter; otherwise they are threads
    of this process (the in-process nodes of the tests, which start faster).
    With ``receiver_processes`` (``serve`` too) ``listener.processes`` processes
    receive on the listener's ports (:mod:`gateway.receivers`); otherwise this
    one alone.
    """

    def __init__(self, app: App, *, worker_processes: bool = False,
                 receiver_processes: bool = False) -> None:
        self.app = app
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        self.receivers: ReceiverProcesses | None = None
        self._receiving = app.settings.listener.processes if receiver_processes else 1
        count = app.settings.ingest.workers
        self.clock = Clock(app)
        self.audit = AuditWriter(app)
        self.workers: WorkerThreads | WorkerProcesses = (
            WorkerProcesses(app, count) if worker_processes else WorkerThreads(app, count))

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("the node is not listening")
        return int(self.server.server_address[1])

    @property
    def tls_port(self) -> int:
        if self.tls_server is None:
            raise RuntimeError("the node has no TLS listener")
        return int(self.tls_server.server_address[1])

    def repair(self) -> None:
        """Undo what an interrupted run left behind (see the module docstring)."""
        receiving = self.receiving_dir
        swept = sweep_partial(receiving) + sum(
            sweep_partial(folder) for folder in receiving.iterdir() if folder.is_dir())
        recovered = self.app.spool.recover()
        # A store shared with other nodes (PostgreSQL) may hold their writes in flight:
        # only what no writer can still be working on goes.
        shared = not self.app.settings.database_url.startswith("sqlite")
        temporary = self.app.store.sweep_temporary(min_age_seconds=600 if shared else 0)
        logger.info("repair partial_receives=%d spool_recovered=%d store_temporaries=%d",
                    swept, recovered, temporary)

    @property
    def receiving_dir(self) -> Path:
        """Where pynetdicom streams datasets: on the spool's filesystem, so a rename moves them.

        The node's other receiving processes have a folder each inside it."""
        return receiving_dir(self.app)

    def start(self, *, own_tempdir: bool = False) -> None:
        """Repair, start the workers, then listen.

        With ``own_tempdir`` (``serve``, one node per process) pynetdicom's
        temporary files go to the spool's ``receiving/`` folder, where a
        rename moves them into the spool and start-up sweeps leftovers.
        """
        if own_tempdir:
            tempfile.tempdir = str(self.receiving_dir)
        self.repair()
        settings = self.app.settings
        if not is_loopback(settings.listener.bind) and settings.policy.store_open:
            logger.warning("policy store_open=true: unregistered callers may store on %s",
                           settings.listener.bind)
        tls = settings.tls
        context = server_context(tls) if tls.enabled else None  # a bad file stops us here
        count = self._receiving if supported() else 1
        if own_tempdir:  # a taken port is one readable line, before anything starts
            for port in ([tls.port] if context else []) + (
                    [settings.listener.port] if context is None or tls.plain_listener else []):
                _claim(settings.listener.bind, port)
        self.workers.start()
        self.audit.start()
        if count > 1:  # the children first: once serve answers, the node is at full size
            receivers = ReceiverProcesses(self.app, count)
            try:
                receivers.start()
            except GatewayError:
                self.stop()  # what started already: nothing is left running
                raise
            self.receivers = receivers
        ae = build_ae(self.app, receivers=count)
        self.server, self.tls_server = open_listeners(self.app, ae, context, shared=count > 1)
        self.clock.start()
        record_quietly(self.app, "node-start", settings.node.ae_title, "success", queued=True,
                       detail=self._addresses())

    def _addresses(self) -> str:
        """The listeners, for the audit trail: ``address=HOST:PORT`` and ``tls=HOST:PORT``."""
        bind = self.app.settings.listener.bind
        return " ".join(f"{name}={bind}:{server.server_address[1]}"
                        for name, server in (("address", self.server), ("tls", self.tls_server))
                        if server is not None)

    def stop(self) -> None:
        self.clock.stop()
        listening = self._addresses()
        for server in (self.server, self.tls_server):
            if server is not None:
                close_listener(server)
        self.server = self.tls_server = None
        if self.receivers is not None:
            self.receivers.stop()
            self.receivers = None
        if listening:
            record_quietly(self.app, "node-stop", self.app.settings.node.ae_title, "success",
                           queued=True, detail=listening)
        self.audit.stop()  # after the listeners: every queued record is written
        self.workers.stop()


def _claim(host: str, port: int) -> None:
    """:func:`gateway.reuseport.claim_port`, failing as a :class:`GatewayError`."""
    try:
        claim_port(host, port)
    except OSError as exc:
        raise GatewayError(f"cannot listen on {host} port {port}: "
                           f"{exc.strerror or exc}") from None
