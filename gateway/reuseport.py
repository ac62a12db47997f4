"""Listening sockets that several receiving processes share (``SO_REUSEPORT``).

pynetdicom decodes every PDU and message in Python, so one process receives on
one core however many clinics send at once. With ``listener.processes`` above
one, ``serve`` runs that many processes that each bind the listener's port
with ``SO_REUSEPORT`` (Linux 3.9, the BSDs): the kernel hashes each incoming
connection to one of the bound sockets, and each association then lives
entirely in the process that accepted it. Nothing else is shared between them
but the spool and the database (:mod:`gateway.receivers`).

The option has one hazard: any later socket of the same user that also sets
it joins the group and silently takes a share of the connections (a second
``serve`` started by mistake on the same port, say). :func:`claim_port`
therefore first binds the port without the option, which fails with "address
already in use" when anything listens there, exactly as a single-process node
would.

Written for pynetdicom 3.0: ``AssociationServer.server_bind`` sets
``SO_REUSEADDR`` and binds; the subclasses set ``SO_REUSEPORT`` first.
"""

from __future__ import annotations

import logging
import socket
import time

from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from .tls import TLSAssociationServer
from .unrequested import wake

__all__ = ["BACKLOG", "ListenerServer", "ReusePortServer", "ReusePortTLSServer", "claim_port",
           "close_listener", "supported"]

logger = logging.getLogger(__name__)

#: connections the kernel queues before the server accepts them (``listen(2)``'s backlog).
#: socketserver's default of 5 makes a burst of clinics connecting at once wait for SYN
#: retransmissions (a second or more each); the kernel caps it at ``net.core.somaxconn``.
BACKLOG = 128


def supported() -> bool:
    """Whether this platform has ``SO_REUSEPORT``."""
    return hasattr(socket, "SO_REUSEPORT")


def claim_port(host: str, port: int) -> None:
    """Fail with ``OSError`` (EADDRINUSE) when something already listens on ``host:port``.

    The probe binds without ``SO_REUSEPORT`` and closes again at once (see the
    module docstring); ``SO_REUSEADDR`` is set as pynetdicom sets it, so a port
    left in TIME_WAIT by a stopped node is free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


class _ReusePort:
    """Sets ``SO_REUSEPORT`` before pynetdicom's ``server_bind`` binds."""

    def server_bind(self) -> None:
        listening: socket.socket = getattr(self, "socket")
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()  # type: ignore[misc]


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a listen backlog of :data:`BACKLOG`."""

    request_queue_size = BACKLOG


class ReusePortServer(_ReusePort, ListenerServer):
    """The node's listener on a port shared with its other receiving processes."""


class ReusePortTLSServer(_ReusePort, TLSAssociationServer):
    """The DICOM TLS server (:class:`gateway.tls.TLSAssociationServer`) on a shared port."""


def close_listener(server: AssociationServer, timeout: float = 10.0) -> None:
    """Stop accepting, abort the associations still open, and wait for their threads.

    pynetdicom's ``shutdown()`` closes the listening socket only: each
    association runs on in its own thread, and one still inside a handler (a
    database call, a file write) would outlive the node's database engine.
    Every open association is therefore aborted (PS3.8 7.3, A-ABORT) and its
    thread joined, for at most ``timeout`` seconds in all. Nothing acknowledged
    is lost by this: a C-STORE is answered Success only once its bytes are
    durable (ARCHITECTURE, durability contract), and a sender whose store was
    cut sends it again.
    """
    server.shutdown()
    associations = server.active_associations
    for association in associations:
        association.abort()
        wake(association)  # one still awaiting its A-ASSOCIATE-RQ (gateway.unrequested)
    deadline = time.monotonic() + timeout
    for association in associations:
        association.join(max(0.0, deadline - time.monotonic()))
    running = sum(association.is_alive() for association in associations)
    if associations:
        logger.info("listener closed aborted=%d still_running=%d", len(associations), running)
