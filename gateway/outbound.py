"""Associations to a destination: proposed for a job, kept open for the next one (PS3.8 7.1).

ARCHITECTURE.md, routing and forwarding. The forwarder (:mod:`gateway.forwarder`)
sends a job over a :class:`Link`: one association with one destination peer
(its AE title, host and port; our AE title as calling AE; TCP_NODELAY; our
``limits.max_pdu`` as the largest PDU we receive). The presentation contexts
proposed (PS3.8 9.3.2.2) follow the destination's ``transfer_syntax``:

- ``stored``: each (SOP class, stored transfer syntax) in a context of its
  own (an acceptor accepts one transfer syntax per context), and each SOP
  class one more with Explicit and Implicit VR Little Endian, for what the
  destination will not take as stored (sent decompressed);
- ``uncompressed``: each SOP class with Explicit VR Little Endian only;
  everything is sent in it, decompressed where stored compressed.

A link whose association is still established, to the same address, and
whose proposed contexts cover the next job's is used again for it: the
consecutive jobs of one destination share one association instead of
negotiating one each (PS3.7 6.1: an association carries any number of
DIMSE operations). The contexts of :mod:`gateway.confirm` (Storage
Commitment, C-FIND) are proposed too, for the confirmation after each job's
last C-STORE. One :class:`~pynetdicom.ae.ApplicationEntity` serves every
link of a forwarding pass; each association gets its contexts as it is
requested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association

import storage.jobs as jobs
from storage.records import PeerRecord

from . import confirm, directsend, reactorpause
from .app import App
from .scp import set_tcp_nodelay
from .tls import close_transport, tls_args

__all__ = ["UNCOMPRESSED", "Link", "contexts", "make_ae"]

logger = logging.getLogger(__name__)

#: the transfer syntaxes every storage SCP accepts (PS3.5 10.1), Explicit VR first
UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
#: the most presentation contexts one association may propose (PS3.8 9.3.2: odd IDs 1-255)
_MAX_CONTEXTS = 128

Context = tuple[str, tuple[str, ...]]


def make_ae(app: App) -> AE:
    """The calling AE of a forwarding pass, with the node's timeouts."""
    ae = AE(ae_title=app.settings.node.ae_title)
    limits = app.settings.limits
    ae.acse_timeout, ae.dimse_timeout = limits.acse_timeout, limits.dimse_timeout
    ae.network_timeout = limits.network_timeout
    ae.connection_timeout = limits.network_timeout
    return ae


def contexts(items: Iterable[jobs.ItemToSend], transfer_syntax: str) -> list[Context]:
    """The presentation contexts to propose for ``items`` (see the module docstring)."""
    proposed: list[Context] = []
    for item in items:
        if transfer_syntax == "uncompressed":
            wanted: tuple[Context, ...] = ((item.sop_class_uid, UNCOMPRESSED[:1]),)
        else:
            wanted = ((item.sop_class_uid, (item.transfer_syntax_uid,)),
                      (item.sop_class_uid, UNCOMPRESSED))
        proposed += [context for context in wanted if context not in proposed]
    return proposed


class Link:
    """One destination's association, opened for a job and reused by the next one."""

    def __init__(self, app: App, ae: AE) -> None:
        self._app = app
        self._ae = ae
        self._assoc: Association | None = None
        self._address: tuple[str, str, str, int] | None = None
        self._proposed: list[Context] = []
        #: (SOP class, transfer syntax) the destination accepted on the open association
        self.accepted: set[tuple[str, str]] = set()

    def open(self, peer: PeerRecord | None, slug: str,
             items: list[jobs.ItemToSend]) -> Association | str:
        """The association to send ``items`` on, or why there is none (a reason without PHI)."""
        if peer is None or "destination" not in peer.roles:
            self.close()
            return f"destination {slug!r} is not a registered peer with the destination role"
        wanted = contexts(items, peer.transfer_syntax)
        address = (slug, peer.ae_title, peer.host, peer.port)
        assoc = self._assoc
        if (assoc is not None and assoc.is_established and address == self._address
                and all(context in self._proposed for context in wanted)):
            return assoc
        self.close()
        confirming = confirm.contexts()
        proposed = wanted[:_MAX_CONTEXTS - len(confirming)]
        assoc = self._ae.associate(
            peer.host, peer.port, ae_title=peer.ae_title, max_pdu=self._app.settings.limits.max_pdu,
            contexts=[build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in proposed]
            + confirming, tls_args=tls_args(self._app.settings.tls, peer),
            evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay),
                          (evt.EVT_CONN_OPEN, directsend.install),
                          (evt.EVT_CONN_OPEN, reactorpause.install),
                          *confirm.event_handlers(self._app, slug)])
        if not assoc.is_established:
            close_transport(assoc)
            return (f"association with {slug} ({peer.host}:{peer.port}) "
                    f"{'rejected' if assoc.is_rejected else 'failed'}")
        self._assoc, self._address, self._proposed = assoc, address, proposed
        self.accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                         for cx in assoc.accepted_contexts}
        return assoc

    def close(self) -> None:
        """Release the association, if one is open (PS3.8 7.2, A-RELEASE)."""
        assoc, self._assoc, self.accepted = self._assoc, None, set()
        if assoc is not None and assoc.is_established:
            assoc.release()
