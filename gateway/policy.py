"""Who may associate and for what (PS3.8 9.3.4, ARCHITECTURE "Peers and access").

Secure by default. On a loopback listener (127.0.0.1, ::1) anyone local may
echo and store, so that a first try just works, unless
``policy.loopback_store_open`` is false. On any other address only
registered peers are served, each for its roles, unless
``policy.store_open`` lets unregistered callers store (``serve`` announces
it). A peer pinned to an address is refused from any other address.

Refusals happen at association time with the PS3.8 reasons pynetdicom uses:
called AE title not ours -> rejected-permanent (1, 1, 7); calling AE title
not recognised (unknown, or pinned elsewhere) -> (1, 1, 3). A registered
peer without the ``source`` role that sends a C-STORE, and any caller
without the ``query`` role that sends a C-FIND (unregistered local callers
included: loopback is open to echo and store only), get 0x0124 "Refused:
Not Authorised" (PS3.7 C). Every refusal leaves an audit record (I5). An
admitted peer carries its scope, which bounds what it finds.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import storage.audit as audit
import storage.peers as peers
from storage.db import session_scope
from storage.models import PeerScope

from .app import App

__all__ = ["Decision", "admit", "is_loopback", "may_query", "may_store"]

logger = logging.getLogger(__name__)

CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Decision:
    """Whether an association is admitted; ``reject`` is the (result, source, reason).

    ``scope`` is the admitted peer's (what a C-FIND shows it); an
    unregistered caller has no query role, so its scope is never used.
    """

    admitted: bool
    reject: tuple[int, int, int] | None = None
    peer_slug: str | None = None
    roles: frozenset[str] = frozenset()
    reason: str = ""
    scope: PeerScope = PeerScope.SENT


def admit(app: App, calling_ae: str, called_ae: str, address: str) -> Decision:
    """Decide on an A-ASSOCIATE-RQ from ``calling_ae`` at ``address``."""
    if called_ae.strip() != app.settings.node.ae_title:
        return Decision(False, CALLED_AE_NOT_RECOGNIZED, reason="called AE title is not ours")
    with session_scope(app.engine) as session:
        known = peers.by_ae_title(session, calling_ae.strip())
    for peer in known:
        if peer.pinned_address and peer.pinned_address != address:
            continue
        return Decision(True, peer_slug=peer.slug, roles=frozenset(peer.roles),
                        scope=peer.scope)
    if known:
        return Decision(False, CALLING_AE_NOT_RECOGNIZED,
                        reason="calling AE title is registered for another address")
    if _open_to_unknown(app):
        return Decision(True, roles=frozenset({"source"}))
    return Decision(False, CALLING_AE_NOT_RECOGNIZED, reason="calling AE title not registered")


def _open_to_unknown(app: App) -> bool:
    policy = app.settings.policy
    if is_loopback(app.settings.listener.bind):
        return policy.loopback_store_open
    return policy.store_open


def may_store(decision: Decision) -> bool:
    return "source" in decision.roles


def may_query(decision: Decision) -> bool:
    """A C-FIND needs a registered peer with the ``query`` role."""
    return decision.peer_slug is not None and "query" in decision.roles


def record_refusal(app: App, event: str, calling_ae: str, reason: str) -> None:
    """Audit a refusal; the calling AE title is the actor, never a patient value."""
    logger.warning("%s calling_ae=%r reason=%r", event, calling_ae, reason)
    with session_scope(app.engine) as session:
        audit.record(session, event, calling_ae, "failure", detail=reason)
