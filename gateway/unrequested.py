"""Connections that close before their A-ASSOCIATE-RQ: end the waiting association at once.

PS3.8 9.2 state table: in Sta2 (transport connection open, awaiting the
A-ASSOCIATE-RQ PDU) a closed connection (Evt17) is action AA-5, stop the
ARTIM timer and return to Sta1: the association is over. pynetdicom 3.0
does that in its DUL (``fsm.AA_5``) but tells the association nothing:
``Association.run_reactor`` keeps waiting on the DUL's ``to_user_queue``
for the request until the ACSE timeout (``limits.acse_timeout``). A port
scanner, a load balancer's health check or a flood of bare connects (RELIABILITY
T10) therefore leaves one thread per connection for that long, and a node
being stopped waits for each of them.

:func:`end_unrequested` is an EVT_CONN_CLOSE handler (the event AA-5
triggers): for an acceptor that has received no A-ASSOCIATE-RQ it puts
``None`` on that queue, which ``run_reactor`` reads as its ACSE timeout
(kill, close the socket, return) at once. :func:`wake` does the same for a
listener being closed (:func:`gateway.reuseport.close_listener`).
``tests/unit/test_unrequested.py`` pins the pynetdicom version this was read
from.
"""

from __future__ import annotations

from typing import Any

__all__ = ["end_unrequested", "wake"]


def wake(association: Any) -> None:
    """End the wait of an acceptor that never got its A-ASSOCIATE-RQ (see the docstring)."""
    if association.is_acceptor and association.requestor.primitive is None:
        association.dul.to_user_queue.put(None)


def end_unrequested(event: Any) -> None:
    """EVT_CONN_CLOSE: the connection closed; if it never asked for an association, end it."""
    wake(event.assoc)
