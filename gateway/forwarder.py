"""The forwarder: send leased jobs of the forward queue to their destinations (PS3.4 B.2).

ARCHITECTURE.md, routing and forwarding; durability contract 3. For each
job :func:`run_due` leases (:func:`storage.jobs.claim_due`) it opens one
association to the destination peer (its AE title, host and port; our AE
title as calling AE; TCP_NODELAY), proposes each SOP class of the job with
the stored transfer syntax first and Explicit/Implicit VR Little Endian
after it, and sends the job's pending instances from the de-identified
files, one C-STORE each:

- 0x0000 and 0xBxxx (warning: coercion, elements discarded) count as
  delivered (PS3.4 B.2.3);
- 0xA7xx (out of resources), no response, an aborted or refused
  association: the attempt stops and the job is retried after the back-off
  of ``[forward]``; what was delivered stays delivered;
- 0xA9xx, 0xCxxx and any other failure: that instance is refused for good;
  the job fails once its other instances are through (a dead letter that
  ``queue retry`` can send again).

Outcomes are committed every :data:`_COMMIT_EVERY` instances, so after a
crash only the instances in flight are sent again (a destination keeps one
copy per SOP Instance UID). A destination that does not accept the stored
transfer syntax gets the instance decompressed to Explicit VR Little Endian
(pydicom's pixel data handlers). After the last instance, delivery is
confirmed on the same association (:mod:`gateway.confirm`): by Storage
Commitment where the destination accepts it, else by an IMAGE-level C-FIND,
else by the C-STORE statuses; the job records which (``confirmed_by``), and
instances the destination does not confirm are sent again at the next
attempt. Logs name the job, the study's remapped UID and the destination
slug, never a patient.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from sqlalchemy.exc import SQLAlchemyError

import storage.jobs as jobs
import storage.peers as peers
from anonymizer import AnonymizationError, KeyedPseudonyms, anonymize
from storage.db import session_scope
from storage.queue_models import ItemState, JobState
from storage.records import PeerRecord
from storage.schedule import is_open

from . import confirm
from .app import App
from .scp import set_tcp_nodelay

__all__ = ["ForwardReport", "run_due", "send_job"]

logger = logging.getLogger(__name__)

#: outcomes committed together while a job is sent (what a crash may send twice)
_COMMIT_EVERY = 16
#: values larger than this stay on disk until written to the association
_DEFER_BYTES = 1 << 20
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class ForwardReport:
    """What one pass over the due jobs did."""

    done: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.done + self.retried + self.failed


def _owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def _policy(app: App) -> jobs.RetryPolicy:
    forward = app.settings.forward
    return jobs.RetryPolicy(forward.max_attempts, forward.first_delay_seconds,
                            forward.backoff_multiplier, forward.max_delay_seconds)


def run_due(app: App, limit: int | None = None, *, now: datetime | None = None) -> ForwardReport:
    """Lease and send due jobs one after another until none is due (or ``limit`` were sent).

    Only jobs whose destination's schedule is open at ``now`` are taken
    (:mod:`storage.schedule`); the others wait, attempts untouched.
    """
    owner = _owner()
    report = ForwardReport()
    while limit is None or report.total < limit:
        moment = now or datetime.now(UTC)
        with session_scope(app.engine) as session:
            open_now = [peer.slug for peer in peers.list_all(session)
                        if "destination" in peer.roles and is_open(peer.schedule, moment)]
            claimed = jobs.claim_due(session, owner, moment, app.settings.forward.lease_seconds,
                                     destinations=open_now)
        if not claimed:
            break
        record = send_job(app, claimed[0], owner)
        if record is None or record.state is JobState.PENDING:
            report = ForwardReport(report.done, report.retried + 1, report.failed)
        elif record.state is JobState.DONE:
            report = ForwardReport(report.done + 1, report.retried, report.failed)
        else:
            report = ForwardReport(report.done, report.retried, report.failed + 1)
    return report


def _contexts(items: list[jobs.ItemToSend]) -> list[tuple[str, list[str]]]:
    """The presentation contexts to propose (PS3.8 9.3.2.2): one per acceptor's choice.

    An acceptor accepts one transfer syntax per context, so each (SOP class,
    stored transfer syntax) gets a context of its own, and each SOP class one
    more with the uncompressed syntaxes, for what the destination will not
    take as stored (sent decompressed).
    """
    proposed: list[tuple[str, list[str]]] = []
    for item in items:
        for syntaxes in ([item.transfer_syntax_uid], [str(ts) for ts in _UNCOMPRESSED]):
            if (item.sop_class_uid, syntaxes) not in proposed:
                proposed.append((item.sop_class_uid, syntaxes))
    return proposed


def _associate(app: App, peer: PeerRecord | None, peer_slug: str,
               items: list[jobs.ItemToSend]) -> Association | str:
    if peer is None or "destination" not in peer.roles:
        return f"destination {peer_slug!r} is not a registered peer with the destination role"
    ae = AE(ae_title=app.settings.node.ae_title)
    limits = app.settings.limits
    ae.acse_timeout, ae.dimse_timeout = limits.acse_timeout, limits.dimse_timeout
    ae.network_timeout = limits.network_timeout
    confirming = confirm.contexts()
    ae.requested_contexts = [build_context(sop_class, syntaxes) for sop_class, syntaxes
                             in _contexts(items)[:128 - len(confirming)]] + confirming
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, max_pdu=limits.max_pdu,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay),
                                       *confirm.event_handlers(app, peer_slug)])
    if not assoc.is_established:
        return (f"association with {peer_slug} ({peer.host}:{peer.port}) "
                f"{'rejected' if assoc.is_rejected else 'failed'}")
    return assoc


def _dataset(app: App, item: jobs.ItemToSend, accepted: set[tuple[str, str]],
             space: KeyedPseudonyms | None) -> Dataset | Path:
    """The stored file itself when it can go as stored, else a decoded (re-keyed) copy.

    A path is sent as the file's bytes, never decoded (pynetdicom's
    ``STORE_SEND_CHUNKED_DATASET``, set in :mod:`gateway.app`). For a
    destination with a pseudonym space of its own (``space``), the stored,
    de-identified instance goes through the de-identification engine again
    with that destination's keys: patient ID and name, dates and every
    instance UID are replaced consistently within the destination and
    unlinkably across destinations (PS3.15 E.1.1: the same profile, another
    key).
    """
    path = app.store.path_of(item.file_path)
    if space is None and (item.sop_class_uid, item.transfer_syntax_uid) in accepted:
        return path
    ds: Dataset = dcmread(path, defer_size=_DEFER_BYTES)
    if space is not None:
        ds = anonymize(ds, app.rekey_profile, space).dataset
    if ((item.sop_class_uid, item.transfer_syntax_uid) not in accepted
            and ds.file_meta.TransferSyntaxUID.is_compressed):
        ds.decompress()  # to Explicit VR Little Endian, through pydicom's pixel data handlers
    return ds


def send_job(app: App, job: jobs.JobRecord, owner: str) -> jobs.JobRecord | None:
    """Send one leased job's pending instances; close the attempt (see the module docstring)."""
    started = time.monotonic()
    policy = _policy(app)
    with session_scope(app.engine, readonly=True) as session:
        items = jobs.items_to_send(session, job.id)
        peer = peers.get(session, job.destination)
    space = (app.destination_space(job.destination)
             if peer is not None and peer.pseudonyms == "own" else None)
    error = ""
    confirmed = confirm.Confirmation(confirm.C_STORE_STATUS)
    pending: list[tuple[str, ItemState, int | None]] = []
    connected = _associate(app, peer, job.destination, items) if items else None
    if isinstance(connected, str):
        error = connected
    elif connected is not None:
        assoc = connected
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in assoc.accepted_contexts}
        try:
            for item in items:
                if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted and not any(
                        (item.sop_class_uid, str(ts)) in accepted for ts in _UNCOMPRESSED):
                    pending.append((item.sop_instance_uid, ItemState.FAILED, None))
                    continue
                try:
                    outgoing = _dataset(app, item, accepted, space)
                except AnonymizationError as exc:  # names the rule, never a value
                    logger.warning("forward job=%d sop=%s state=failed reason=%r", job.id,
                                   item.sop_instance_uid, str(exc))
                    pending.append((item.sop_instance_uid, ItemState.FAILED, None))
                    continue
                status = assoc.send_c_store(outgoing)
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    error = "no C-STORE response (association aborted or timed out)"
                    break
                if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
                    pending.append((item.sop_instance_uid, ItemState.SENT, code))
                elif 0xA700 <= code <= 0xA7FF:
                    error = f"destination out of resources (0x{code:04X})"
                    break
                else:
                    pending.append((item.sop_instance_uid, ItemState.FAILED, code))
                if len(pending) >= _COMMIT_EVERY:
                    _record(app, job.id, pending)
                    pending = []
            if not error:
                _record(app, job.id, pending)
                pending = []
                confirmed = confirm.confirm_delivery(app, assoc, job, owner, space)
                error = confirmed.error
        except (OSError, ValueError, RuntimeError) as exc:
            error = f"sending failed ({type(exc).__name__}: {str(exc)[:160]})"
        finally:
            if assoc.is_established:
                assoc.release()
    try:
        _record(app, job.id, pending)
        with session_scope(app.engine) as session:
            closed = jobs.finish(session, job.id, owner, datetime.now(UTC), policy, error=error,
                                 confirmed_by=confirmed.confirmed_by)
    except SQLAlchemyError as exc:
        logger.error("forward job=%d state=unrecorded reason=%r", job.id, type(exc).__name__)
        return None
    if closed is not None:
        logger.info("forward job=%d study=%s to=%s state=%s sent=%d failed=%d pending=%d "
                    "attempt=%d elapsed=%.1fs%s", job.id, job.study_instance_uid,
                    job.destination, closed.state.value, closed.sent, closed.failed,
                    closed.pending, closed.attempts, time.monotonic() - started,
                    f" reason={error!r}" if error else "")
    return closed


def _record(app: App, job_id: int, outcomes: list[tuple[str, ItemState, int | None]]) -> None:
    if outcomes:
        with session_scope(app.engine) as session:
            jobs.record_items(session, job_id, outcomes)

