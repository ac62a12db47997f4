"""The node's listening servers: backlog, connection cap, closing, and shared ports.

Every listener has a listen backlog of :data:`BACKLOG`, closes connections on
accept past its :func:`connection_cap`, and is stopped by
:func:`close_listener`, which ends its open associations too.

Shared ports (``SO_REUSEPORT``)
-------------------------------

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
import threading
import time

from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from .tls import TLSAssociationServer
from .unrequested import wake

__all__ = ["BACKLOG", "ListenerServer", "ListenerTLSServer", "ReusePortServer",
           "ReusePortTLSServer", "claim_port", "close_listener", "connection_cap", "supported"]

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


def connection_cap(maximum_associations: int) -> int:
    """How many associations a listener holds before it closes new connections on accept.

    Up to twice the association limit, plus eight, are taken in, so that a
    caller past the limit still gets its A-ASSOCIATE-RJ (2, 3, 2) (transient,
    service-provider presentation, local limit exceeded: PS3.8 9.3.4). Past
    that a connection is closed as soon as it is accepted, before pynetdicom
    gives it two threads (RELIABILITY T10 allows an "OS-level refusal"): a
    flood then costs an accept and a close per connection, and the
    associations already running keep their CPU.
    """
    return 2 * maximum_associations + 8


class _Capped:
    """Closes a connection on accept while the server holds ``connection_cap`` associations
    (0: no cap); a line is logged for the first and then at most every ten seconds.

    A connection counts from its accept: pynetdicom's ``active_associations`` sees it
    only once its request thread has started the association's thread, and a flood
    accepted faster than those threads start would otherwise pass the cap. A
    connection is counted once, whichever of the two holds it (a TLS handshake in
    progress included).
    """

    connection_cap = 0
    _refused = 0
    _logged_at = float("-inf")

    def verify_request(self, request: object, client_address: object) -> bool:
        cap = self.connection_cap
        if not cap:
            return True
        active = getattr(self, "active_associations")
        with _STARTING:
            starting = set(self._starting())
        if starting:
            starting -= {id(getattr(assoc.dul.socket, "socket", None)) for assoc in active}
        open_now = len(active) + len(starting)
        if open_now < cap:
            return True
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _REFUSAL_LOG_SECONDS:
            address = client_address[0] if isinstance(client_address, tuple) else "-"
            logger.warning("connection refused at accept address=%s associations=%d cap=%d "
                           "refused_since_last_line=%d", address, open_now, cap, self._refused)
            self._logged_at, self._refused = now, 0
        return False

    def _starting(self) -> dict[int, object]:
        """The accepted connections whose request thread has not ended, by ``id``."""
        accepted: dict[int, object] | None = getattr(self, "_accepted", None)
        if accepted is None:
            accepted = {}
            setattr(self, "_accepted", accepted)
        return accepted

    def process_request(self, request: object, client_address: object) -> None:
        with _STARTING:
            self._starting()[id(request)] = request
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._ended_start(request)
            raise

    def process_request_thread(self, request: object, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._ended_start(request)

    def _ended_start(self, request: object) -> None:
        with _STARTING:
            self._starting().pop(id(request), None)


#: guards every listener's accepted-connection table (held for a dictionary update)
_STARTING = threading.Lock()
#: at most one "connection refused" line per listener in this many seconds
_REFUSAL_LOG_SECONDS = 10.0


class ListenerServer(_Capped, ThreadedAssociationServer):
    """pynetdicom's threaded server with a listen backlog of :data:`BACKLOG` and a
    :func:`connection_cap`."""

    request_queue_size = BACKLOG


class ListenerTLSServer(_Capped, TLSAssociationServer):
    """The DICOM TLS server (:class:`gateway.tls.TLSAssociationServer`) with a
    :func:`connection_cap`."""


class ReusePortServer(_ReusePort, ListenerServer):
    """The node's listener on a port shared with its other receiving processes."""


class ReusePortTLSServer(_ReusePort, ListenerTLSServer):
    """The DICOM TLS listener on a port shared with its other receiving processes."""


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
