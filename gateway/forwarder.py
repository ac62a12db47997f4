"""The forwarder: send leased jobs of the forward queue to their destinations (PS3.4 B.2).

ARCHITECTURE.md, routing and forwarding; durability contract 3.
:func:`run_due` leases due jobs (:func:`storage.jobs.claim_due`, which keeps
each destination within its ``max_associations`` across all nodes) and
sends them on up to ``forward.max_workers`` threads: several destinations
in parallel, and one destination on as many associations as it allows. A
thread that finished a job takes the destination's next due job and sends
it on the same association (:class:`gateway.outbound.Link`, which also
says which presentation contexts are proposed). Each job's pending
instances are sent from the de-identified files, one C-STORE each:

- 0x0000 and 0xBxxx (warning: coercion, elements discarded) count as
  delivered (PS3.4 B.2.3);
- 0xA7xx (out of resources), no response, an aborted or refused
  association: the attempt stops and the job is retried after the back-off
  of the destination's retry policy (``[forward]`` for what it leaves
  unset); what was delivered stays delivered;
- 0xA9xx, 0xCxxx and any other failure: that instance is refused for good;
  the job fails once its other instances are through (a dead letter that
  ``queue retry`` can send again).

Outcomes are committed every :data:`_COMMIT_EVERY` instances, so after a
crash only the instances in flight are sent again (a destination keeps one
copy per SOP Instance UID); each such commit renews the job's lease, and a
sender that finds its lease taken over stops (the job is another's now). An
instance the destination is not sent as stored (it does not accept the
stored transfer syntax, or its ``transfer_syntax`` is ``uncompressed``) is
decompressed to Explicit VR Little Endian (pydicom's pixel data handlers).
After the last instance, delivery is confirmed on the same association
(:mod:`gateway.confirm`): by Storage Commitment where the destination
accepts it, else by an IMAGE-level C-FIND, else by the C-STORE statuses; the
job records which (``confirmed_by``), and instances the destination does not
confirm are sent again at the next attempt. A job whose instances were all
sent at an attempt that ended before its confirmation (a crash while the
result was awaited) gets an association for the confirmation alone. Logs
name the job, the study's remapped UID and the destination slug, never a
patient.

Leases and back-off are wall-clock times in the database, shared by the
nodes. A step forward of one node's clock makes the leases it sees look
expired; the jobs this process is sending (:data:`_SENDING`) are therefore
never claimed again by it, whatever their lease says, so a job is never
sent by two of its lanes at once (RELIABILITY T30).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy.exc import SQLAlchemyError

import storage.jobs as jobs
import storage.peers as peers
from anonymizer import AnonymizationError, KeyedPseudonyms, anonymize
from storage.db import session_scope
from storage.queue_models import ItemState, JobState
from storage.records import PeerRecord
from storage.schedule import is_open

from . import confirm, reactorpause
from .app import App
from .audittrail import forward_outcome
from .outbound import UNCOMPRESSED, Link, make_ae

__all__ = ["ForwardReport", "run_due", "send_job"]

logger = logging.getLogger(__name__)

#: an instance's outcome: its SOP Instance UID, its state, the destination's status
Outcome = tuple[str, ItemState, int | None]
#: outcomes committed together while a job is sent (what a crash may send twice)
_COMMIT_EVERY = 16
#: values larger than this stay on disk until written to the association
_DEFER_BYTES = 1 << 20
#: consecutive jobs one thread sends to its destination before the next pass picks again
#: by urgency over all destinations (so a long queue of one destination starves no other)
_JOBS_PER_LANE = 16


@dataclass(frozen=True)
class ForwardReport:
    """What one pass over the due jobs did."""

    done: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.done + self.retried + self.failed


class _InFlight:
    """The ids of the jobs this process's lanes are sending (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    def snapshot(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._ids)

    def add(self, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.update(job_ids)

    def discard(self, job_id: int) -> None:
        with self._lock:
            self._ids.discard(job_id)


_SENDING = _InFlight()


def _owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def _policy(app: App, peer: PeerRecord | None) -> jobs.RetryPolicy:
    """The destination's retry policy; ``[forward]`` for each value it leaves unset."""
    forward = app.settings.forward
    if peer is None:
        return jobs.RetryPolicy(forward.max_attempts, forward.first_delay_seconds,
                                forward.backoff_multiplier, forward.max_delay_seconds)
    return jobs.RetryPolicy(
        forward.max_attempts if peer.max_attempts is None else peer.max_attempts,
        (forward.first_delay_seconds if peer.first_delay_seconds is None
         else peer.first_delay_seconds),
        (forward.backoff_multiplier if peer.backoff_multiplier is None
         else peer.backoff_multiplier),
        forward.max_delay_seconds if peer.max_delay_seconds is None else peer.max_delay_seconds)


class _Tally:
    """What a pass did, and how many more jobs it may take (``limit``); shared by its threads."""

    def __init__(self, limit: int | None) -> None:
        self._lock = threading.Lock()
        self._left = limit
        self._counts = {"done": 0, "retried": 0, "failed": 0}

    def take(self, wanted: int) -> int:
        with self._lock:
            granted = wanted if self._left is None else max(0, min(wanted, self._left))
            if self._left is not None:
                self._left -= granted
            return granted

    def give_back(self, unused: int) -> None:
        with self._lock:
            if self._left is not None:
                self._left += unused

    def count(self, record: jobs.JobRecord | None) -> None:
        key = ("retried" if record is None or record.state is JobState.PENDING
               else "done" if record.state is JobState.DONE else "failed")
        with self._lock:
            self._counts[key] += 1

    def report(self) -> ForwardReport:
        with self._lock:
            return ForwardReport(**self._counts)


def _claim(app: App, owner: str, now: datetime | None, wanted: int,
           only: str | None = None) -> list[jobs.JobRecord]:
    """Lease up to ``wanted`` due jobs of the destinations whose window is open now."""
    moment = now or datetime.now(UTC)
    with session_scope(app.engine) as session:
        open_now = [peer.slug for peer in peers.list_all(session)
                    if "destination" in peer.roles and is_open(peer.schedule, moment)
                    and only in (None, peer.slug)]
        claimed = jobs.claim_due(session, owner, moment, app.settings.forward.lease_seconds,
                                 wanted, destinations=open_now, busy=_SENDING.snapshot())
    _SENDING.add(job.id for job in claimed)
    return claimed


def _lane(app: App, ae: AE, job: jobs.JobRecord, owner: str, now: datetime | None,
          tally: _Tally) -> None:
    """Send ``job``, then the destination's next due jobs on the same association.

    At most :data:`_JOBS_PER_LANE` jobs, while the pass's ``limit`` allows and
    until an attempt fails (to be retried).
    """
    link = Link(app, ae)
    try:
        for sent in range(1, _JOBS_PER_LANE + 1):
            try:
                closed = send_job(app, job, owner, link=link)
            finally:
                _SENDING.discard(job.id)
            tally.count(closed)
            if (sent == _JOBS_PER_LANE or closed is None or closed.state is JobState.PENDING
                    or not tally.take(1)):
                return  # done, or the destination is failing: its next job waits for a pass
            claimed = _claim(app, owner, now, 1, only=job.destination)
            if not claimed:
                tally.give_back(1)
                return
            job = claimed[0]
    finally:
        link.close()


def run_due(app: App, limit: int | None = None, *, now: datetime | None = None) -> ForwardReport:
    """Lease and send due jobs until none is due (or ``limit`` were sent); see the docstring.

    Only jobs whose destination's schedule is open at ``now`` are taken
    (:mod:`storage.schedule`); the others wait, attempts untouched. At most
    ``forward.max_workers`` associations are open at once.
    """
    owner, tally, ae = _owner(), _Tally(limit), make_ae(app)
    workers = app.settings.forward.max_workers
    running: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forward") as pool:
        while True:
            wanted = tally.take(workers - len(running))
            claimed = _claim(app, owner, now, wanted) if wanted else []
            tally.give_back(wanted - len(claimed))
            running |= {pool.submit(_lane, app, ae, job, owner, now, tally) for job in claimed}
            if not running:
                break
            # a free thread looks again after a poll interval: jobs that fell due meanwhile
            finished, running = wait(running, timeout=app.settings.forward.poll_seconds,
                                     return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # a bug in a lane is not swallowed
    return tally.report()


def _dataset(app: App, item: jobs.ItemToSend, accepted: set[tuple[str, str]],
             space: KeyedPseudonyms | None) -> Dataset | Path:
    """The stored file itself when it can go as stored, else a decoded (re-keyed) copy.

    A path is sent as the file's bytes, never decoded (pynetdicom's
    ``STORE_SEND_CHUNKED_DATASET``, set in :mod:`gateway.app`). A copy is
    decompressed when the stored transfer syntax was not accepted. For a
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
        # to Explicit VR Little Endian, through pydicom's pixel data handlers; the same
        # instance in another transfer syntax keeps its SOP Instance UID (pydicom's default
        # would make a new one, and the destination would hold the instance twice)
        syntax = ds.file_meta.TransferSyntaxUID
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001 - any decoder's refusal fails this instance
            raise NotSendable(f"cannot be decompressed from {syntax.name} "
                              f"({type(exc).__name__})") from exc
    return ds


class NotSendable(Exception):
    """An instance that cannot be made into what the destination takes: compressed pixel
    data no decoder accepts (RELIABILITY T17; the receiver does not decode compressed
    pixel data). It fails that instance alone, at once: no attempt would ever send it."""


def send_job(app: App, job: jobs.JobRecord, owner: str, *,
             link: Link | None = None) -> jobs.JobRecord | None:
    """Send one leased job's pending instances; close the attempt (see the module docstring).

    On ``link`` (its association is used again when it fits, and left open
    unless the attempt failed); without it, on an association of its own.
    """
    started = time.monotonic()
    with session_scope(app.engine, readonly=True) as session:
        items = jobs.items_to_send(session, job.id)
        peer = peers.get(session, job.destination)
    policy = _policy(app, peer)
    own_link = link is None
    link = Link(app, make_ae(app)) if link is None else link
    space = (app.destination_space(job.destination)
             if peer is not None and peer.pseudonyms == "own" else None)
    error = ""
    confirmed = confirm.Confirmation(confirm.C_STORE_STATUS)
    pending: list[Outcome] = []
    # every instance sent at an earlier attempt that ended before its confirmation (the
    # node stopped while it awaited the commitment result): only the confirmation is due
    confirming_only = not items and job.sent > 0
    connected = link.open(peer, job.destination, items) if items or confirming_only else None
    if isinstance(connected, str):
        error = "" if confirming_only else connected  # then the C-STORE statuses stand
    elif connected is not None:
        assoc, accepted = connected, link.accepted
        try:
            with reactorpause.held(assoc):  # one pause of its reactor for all the C-STOREs
                error = _store_items(app, job, owner, assoc, items, accepted, space, pending)
            if not error:
                _record(app, job.id, pending)
                pending = []
                confirmed = confirm.confirm_delivery(app, assoc, job, owner, space)
                error = confirmed.error
        except (OSError, ValueError, RuntimeError) as exc:
            error = f"sending failed ({type(exc).__name__}: {str(exc)[:160]})"
        finally:
            if error or own_link:
                link.close()
    try:
        _record(app, job.id, pending)
        with session_scope(app.engine) as session:
            closed = jobs.finish(session, job.id, owner, datetime.now(UTC), policy, error=error,
                                 confirmed_by=confirmed.confirmed_by)
            forward_outcome(session, job, closed, error, app.settings.node.ae_title)
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


def _store_items(app: App, job: jobs.JobRecord, owner: str, assoc: Association,
                 items: list[jobs.ItemToSend], accepted: set[tuple[str, str]],
                 space: KeyedPseudonyms | None, pending: list[Outcome]) -> str:
    """C-STORE ``items`` in turn; why the attempt stopped, or "" if it did not.

    Outcomes are recorded every :data:`_COMMIT_EVERY`, each time renewing
    the lease; the rest are left in ``pending`` (also when sending raises),
    for the caller to record.
    """
    for item in items:
        if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted and not any(
                (item.sop_class_uid, ts) in accepted for ts in UNCOMPRESSED):
            pending.append((item.sop_instance_uid, ItemState.FAILED, None))
            continue
        try:
            # a result returning to its clinic is re-identified already: never re-keyed
            outgoing = _dataset(app, item, accepted, None if item.reidentified else space)
        except (AnonymizationError, NotSendable) as exc:  # names the rule, never a value
            logger.warning("forward job=%d sop=%s state=failed reason=%r", job.id,
                           item.sop_instance_uid, str(exc))
            pending.append((item.sop_instance_uid, ItemState.FAILED, None))
            continue
        status = assoc.send_c_store(outgoing)
        code = int(status.Status) if status and "Status" in status else None
        if code is None:
            return "no C-STORE response (association aborted or timed out)"
        if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
            pending.append((item.sop_instance_uid, ItemState.SENT, code))
        elif 0xA700 <= code <= 0xA7FF:
            return f"destination out of resources (0x{code:04X})"
        else:
            pending.append((item.sop_instance_uid, ItemState.FAILED, code))
        if len(pending) >= _COMMIT_EVERY:
            held = _record(app, job.id, pending, owner)
            pending.clear()
            if not held:
                return "lease lost: another forwarder took the job over"
    return ""


def _record(app: App, job_id: int, outcomes: list[Outcome],
            owner: str | None = None) -> bool:
    """Keep the outcomes; with ``owner``, renew its lease too: ``False`` once it lost the job.

    Renewing with every batch keeps a job that takes longer than
    ``forward.lease_seconds`` to send with its live sender, so that a
    forwarder on another node takes it up only when the sender died.
    """
    if not outcomes and owner is None:
        return True
    with session_scope(app.engine) as session:
        jobs.record_items(session, job_id, outcomes)
        if owner is None:
            return True
        return jobs.renew_lease(session, job_id, owner, datetime.now(UTC),
                                app.settings.forward.lease_seconds)

