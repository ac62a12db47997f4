"""Who may associate and for what (PS3.8 9.3.4, ARCHITECTURE "Peers and access").

Secure by default. On a loopback listener (127.0.0.1, ::1) anyone local may
echo and store, so that a first try just works, unless
``policy.loopback_store_open`` is false. On any other address only
registered peers are served, each for its roles, unless
``policy.store_open`` lets unregistered callers store (``serve`` announces
it). A peer pinned to an address is refused from any other address; a peer
pinned to a client certificate (its SHA-256 fingerprint) is refused unless
it comes over the TLS listener with that certificate (RELIABILITY.md T02).

Refusals happen at association time with the PS3.8 reasons pynetdicom uses:
called AE title not ours -> rejected-permanent (1, 1, 7); calling AE title
not recognised (unknown, or pinned elsewhere) -> (1, 1, 3). When the peer
table cannot be read (the database is down or locked, RELIABILITY T28) the
look-up is retried a bounded number of times (:data:`PEER_LOOKUP_DELAYS`),
then the association is rejected-transient, temporary congestion (2, 3, 1),
PS3.8 Table 9-21: the caller may try again later; it is never admitted
without a decision. A registered
peer without the ``source`` or ``results`` role that sends a C-STORE, and any caller
without the ``query`` role that sends a C-FIND (unregistered local callers
included: loopback is open to echo and store only), get 0x0124 "Refused:
Not Authorised" (PS3.7 C). Every refusal leaves an audit record (I5), and
so does every association admitted (``association-accepted``). An
admitted peer carries its scope, which bounds what it finds and retrieves.

C-MOVE and C-GET need the ``retrieve`` role. A C-MOVE sends only to a peer
with the ``destination`` role, at the host and port the peer table holds
(never an address the caller gives, RELIABILITY.md T24); which one a
caller may name depends on its scope (:func:`move_destination`): ``all``
any destination peer; ``sent`` and ``routed`` only the caller's own
machine, that is its own peer entry or a destination peer registered with
the same host, so that a clinic pulls its studies back to itself and never
sends them to a third party.

A Storage Commitment result (N-EVENT-REPORT on an association a peer opens)
is taken only from a registered peer with the ``destination`` role, about a
request sent to it (:mod:`gateway.commitment`); others get 0x0124, audited.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy.exc import SQLAlchemyError

import storage.peers as peers
from storage.db import session_scope
from storage.models import PeerScope
from storage.records import PeerRecord

from .app import App
from .audittrail import record_quietly

__all__ = [
    "PEER_LOOKUP_DELAYS", "Decision", "admit", "is_loopback", "may_query", "may_retrieve",
    "may_store",
    "move_destination", "record_admission", "record_refusal", "record_rejection",
]

logger = logging.getLogger(__name__)

CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)
TEMPORARY_CONGESTION = (0x02, 0x03, 0x01)
#: the waits between look-ups of the peer table when the database fails (then 2,3,1)
PEER_LOOKUP_DELAYS: Final = (0.2, 0.5, 1.0)


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


def admit(app: App, calling_ae: str, called_ae: str, address: str,
          certificate: str | None = None) -> Decision:
    """Decide on an A-ASSOCIATE-RQ from ``calling_ae`` at ``address``.

    ``certificate`` is the SHA-256 fingerprint of the client certificate the
    caller presented on the TLS listener (``None``: plain, or no certificate);
    a peer registered with a fingerprint is recognised only with it.
    """
    if called_ae.strip() != app.settings.node.ae_title:
        return Decision(False, CALLED_AE_NOT_RECOGNIZED, reason="called AE title is not ours")
    known = _registered(app, calling_ae.strip())
    if known is None:
        return Decision(False, TEMPORARY_CONGESTION, reason="peer table unavailable")
    for peer in known:
        if peer.pinned_address and peer.pinned_address != address:
            continue
        if peer.certificate_sha256 and peer.certificate_sha256 != certificate:
            continue
        return Decision(True, peer_slug=peer.slug, roles=frozenset(peer.roles),
                        scope=peer.scope)
    if known:
        return Decision(False, CALLING_AE_NOT_RECOGNIZED,
                        reason="calling AE title is registered for another address or "
                               "client certificate")
    if _open_to_unknown(app):
        return Decision(True, roles=frozenset({"source"}))
    return Decision(False, CALLING_AE_NOT_RECOGNIZED, reason="calling AE title not registered")


def _registered(app: App, ae_title: str) -> list[PeerRecord] | None:
    """The peers with this AE title; ``None`` when the database failed every bounded try."""
    for delay in (*PEER_LOOKUP_DELAYS, None):
        try:
            with session_scope(app.engine, readonly=True) as session:
                return peers.by_ae_title(session, ae_title)
        except SQLAlchemyError as exc:
            logger.error("peer lookup failed reason=%r retry_in=%s", type(exc).__name__,
                         f"{delay}s" if delay is not None else "never")
            if delay is not None:
                time.sleep(delay)
    return None


def _open_to_unknown(app: App) -> bool:
    policy = app.settings.policy
    if is_loopback(app.settings.listener.bind):
        return policy.loopback_store_open
    return policy.store_open


def may_store(decision: Decision) -> bool:
    """A C-STORE needs the ``source`` role, or ``results`` (an institute sending results back)."""
    return "source" in decision.roles or "results" in decision.roles


def may_query(decision: Decision) -> bool:
    """A C-FIND needs a registered peer with the ``query`` role."""
    return decision.peer_slug is not None and "query" in decision.roles


def may_retrieve(decision: Decision) -> bool:
    """A C-MOVE or C-GET needs a registered peer with the ``retrieve`` role."""
    return decision.peer_slug is not None and "retrieve" in decision.roles


def move_destination(app: App, decision: Decision,
                     ae_title: str) -> tuple[PeerRecord | None, bool]:
    """The destination peer a C-MOVE names, and whether this caller may send to it.

    Parameters
    ----------
    app : App
        The node.
    decision : Decision
        The caller's admission (its peer and scope).
    ae_title : str
        The request's Move Destination.

    Returns
    -------
    tuple[PeerRecord | None, bool]
        ``(None, False)`` when no peer with the ``destination`` role has this
        AE title (0xA801, move destination unknown); otherwise the peer (the
        first by slug the caller may use, if any) and whether it may
        (``False``: 0xC801, see the module notes).
    """
    with session_scope(app.engine, readonly=True) as session:
        known = [peer for peer in peers.by_ae_title(session, ae_title)
                 if "destination" in peer.roles]
        caller = peers.get(session, decision.peer_slug) if decision.peer_slug else None
    if not known:
        return None, False
    allowed = [peer for peer in known if _may_send_to(decision, caller, peer)]
    return (allowed or known)[0], bool(allowed)


def _may_send_to(decision: Decision, caller: PeerRecord | None, peer: PeerRecord) -> bool:
    if decision.scope is PeerScope.ALL:
        return True
    if caller is None:
        return False
    return peer.slug == caller.slug or peer.host.strip().lower() == caller.host.strip().lower()


def record_refusal(app: App, event: str, calling_ae: str, reason: str) -> None:
    """Audit a refusal; the calling AE title is the actor, never a patient value.

    A database that cannot take the record is logged, never a failed response
    (:func:`gateway.audittrail.record_quietly`).
    """
    logger.warning("%s calling_ae=%r reason=%r", event, calling_ae, reason)
    record_quietly(app, event, calling_ae, "failure", detail=reason)


def record_rejection(app: App, calling_ae: str, address: str, rj: str) -> None:
    """Audit an association pynetdicom itself rejected (``rj``: result, source, reason).

    Queued, not written before returning: the usual cause is a burst of
    associations past ``limits.max_associations``, which one synchronous
    write per rejection would only make worse.
    """
    logger.warning("association-rejected calling_ae=%r address=%s rj=%s", calling_ae, address, rj)
    record_quietly(app, "association-rejected", calling_ae, "failure", queued=True,
                   detail=f"rejected by the association layer address={address} rj={rj}")


def record_admission(app: App, calling_ae: str, address: str, decision: Decision) -> None:
    """Audit an association accepted (``association-accepted``): who, from where, as which peer."""
    roles = ",".join(sorted(decision.roles)) or "-"
    record_quietly(app, "association-accepted", calling_ae, "success", queued=True,
                   detail=f"peer={decision.peer_slug or '-'} address={address} roles={roles}")
