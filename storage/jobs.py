"""The forward queue: enqueue, claim with a lease, record outcomes, back off, give up.

ARCHITECTURE.md, routing and forwarding and scale-out. Every operation runs
in the caller's transaction (:func:`storage.db.session_scope`):

- :func:`enqueue` makes the job for a study and a destination with the
  study's instances that destination has not yet received (a follow-up
  when an earlier job delivered some), or adds late instances to the open
  job; nothing already delivered is ever queued again, so changing routes
  or forwarding again never re-sends a delivered instance;
- :func:`enqueue` also opens or extends the consultation case of the study
  and destination (:func:`storage.cases.track`); :func:`enqueue_results`
  queues re-identified results of a case to the clinic (their items are
  ``case_result`` rows, never index rows, so nothing else can route them);
- :func:`claim_due` leases due jobs to one forwarder. On PostgreSQL the
  candidates are locked ``FOR UPDATE SKIP LOCKED``, so forwarders on many
  nodes never take the same job; on SQLite the write transaction itself
  (``BEGIN IMMEDIATE``) serialises them. A lease that expired (its holder
  died) makes a ``sending`` job claimable again;
- :func:`record_items` keeps each instance's DICOM status as it is
  answered, so a retry sends only what is still pending;
- :func:`finish` closes an attempt: done, or pending again after an
  exponential back-off (``first_delay * multiplier ** (attempts - 1)``,
  capped), or failed (a dead letter with the reason) after the last attempt.
  Only the lease holder may finish. A delivered job moves its cases along
  (:func:`storage.cases.on_job_done`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session

from . import cases
from .case_models import CaseResult
from .db import dialect_of
from .deadletter import dead_letter_reason
from .errors import StorageError
from .models import Instance, Peer, Series, Study, StudyState
from .queue_models import OPEN_STATES, ForwardItem, ForwardJob, ItemState, JobKind, JobState

__all__ = ["ItemToSend", "JobRecord", "RetryPolicy", "cancel", "claim_due", "enqueue",
           "enqueue_results", "finish", "get", "items_to_send", "list_jobs", "mark_routed",
           "record_items", "renew_lease", "retry", "unrouted_stable"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a failed attempt is repeated."""

    max_attempts: int
    first_delay_seconds: int
    multiplier: int
    max_delay_seconds: int

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt."""
        seconds = self.first_delay_seconds * self.multiplier ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.max_delay_seconds))


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the CLI and the forwarder see it, with its items counted by state."""

    id: int
    study_instance_uid: str
    destination: str
    kind: JobKind
    state: JobState
    route: str | None
    priority: int
    attempts: int
    next_attempt_at: datetime
    last_error: str
    confirmed_by: str
    created_at: datetime
    updated_at: datetime
    pending: int
    sent: int
    failed: int


@dataclass(frozen=True, slots=True)
class ItemToSend:
    """One pending instance of a leased job, with where its file is."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    #: a consultation result re-identified for the clinic: sent as stored, never re-keyed
    reidentified: bool = False


def _record(session: Session, job: ForwardJob) -> JobRecord:
    counts = {ItemState(state): int(count) for state, count in session.execute(
        select(ForwardItem.state, func.count()).where(ForwardItem.job_fk == job.id)
        .group_by(ForwardItem.state))}
    return JobRecord(
        id=job.id, study_instance_uid=job.study_instance_uid, destination=job.destination,
        kind=JobKind(job.kind), state=JobState(job.state), route=job.route,
        priority=job.priority, attempts=job.attempts, next_attempt_at=job.next_attempt_at,
        last_error=job.last_error, confirmed_by=job.confirmed_by, created_at=job.created_at,
        updated_at=job.updated_at, pending=counts.get(ItemState.PENDING, 0),
        sent=counts.get(ItemState.SENT, 0), failed=counts.get(ItemState.FAILED, 0))


def enqueue(session: Session, study_instance_uid: str, destination: str, now: datetime, *,
            route: str | None = None, priority: int = 0) -> JobRecord | None:
    """Queue what ``destination`` has not yet received of a study; ``None`` when nothing is left.

    Instances already delivered to ``destination`` (an item ``sent`` in any
    of its jobs) or already queued in an open job are skipped. Late
    instances join the open job (pending or being sent) when there is one;
    otherwise they make a follow-up job.
    """
    study_instances = (select(Instance.sop_instance_uid)
                       .join(Series, Instance.series_fk == Series.id)
                       .join(Study, Series.study_fk == Study.id)
                       .where(Study.study_instance_uid == study_instance_uid))
    earlier = (select(ForwardItem.sop_instance_uid)
               .join(ForwardJob, ForwardItem.job_fk == ForwardJob.id)
               .where(ForwardJob.study_instance_uid == study_instance_uid,
                      ForwardJob.destination == destination,
                      or_(ForwardItem.state == ItemState.SENT,
                          ForwardJob.state.in_(OPEN_STATES))))
    missing = list(session.scalars(
        study_instances.where(Instance.sop_instance_uid.not_in(earlier))))
    if not missing:
        return None
    delivered_before = session.scalar(select(func.count()).select_from(ForwardJob).where(
        ForwardJob.study_instance_uid == study_instance_uid,
        ForwardJob.destination == destination, ForwardJob.kind != JobKind.RESULT))
    job = _open_job(session, study_instance_uid, destination, now,
                    JobKind.FOLLOW_UP if delivered_before else JobKind.INITIAL, route, priority)
    _add_items(session, job, missing, now)
    cases.track(session, study_instance_uid, destination, missing, now)
    return _record(session, job)


def _open_job(session: Session, study_instance_uid: str, destination: str, now: datetime,
              kind: JobKind, route: str | None, priority: int) -> ForwardJob:
    job = session.scalars(select(ForwardJob).where(
        ForwardJob.study_instance_uid == study_instance_uid,
        ForwardJob.destination == destination,
        ForwardJob.state.in_(OPEN_STATES))).one_or_none()
    if job is None:
        job = ForwardJob(
            study_instance_uid=study_instance_uid, destination=destination, kind=kind,
            state=JobState.PENDING, route=route, priority=priority, attempts=0,
            next_attempt_at=now, last_error="", confirmed_by="", created_at=now,
            updated_at=now)
        session.add(job)
        session.flush()
    return job


def _add_items(session: Session, job: ForwardJob, uids: Iterable[str], now: datetime) -> None:
    session.add_all(ForwardItem(job_fk=job.id, sop_instance_uid=uid, state=ItemState.PENDING)
                    for uid in uids)
    job.updated_at = now
    session.flush()


def enqueue_results(session: Session, study_instance_uid: str, destination: str,
                    sop_instance_uids: Collection[str], now: datetime) -> JobRecord | None:
    """Queue re-identified results (``case_result`` rows) of a study to the clinic.

    ``study_instance_uid`` is the node's remapped UID of the case's study
    (what logs and the CLI show). Results already delivered to or queued for
    ``destination`` are skipped; ``None`` when nothing is left.
    """
    earlier = set(session.scalars(
        select(ForwardItem.sop_instance_uid)
        .join(ForwardJob, ForwardItem.job_fk == ForwardJob.id)
        .where(ForwardJob.destination == destination,
               ForwardItem.sop_instance_uid.in_(list(sop_instance_uids)),
               or_(ForwardItem.state == ItemState.SENT, ForwardJob.state.in_(OPEN_STATES)))))
    missing = sorted(set(sop_instance_uids) - earlier)
    if not missing:
        return None
    job = _open_job(session, study_instance_uid, destination, now, JobKind.RESULT, None, 0)
    _add_items(session, job, missing, now)
    return _record(session, job)


def claim_due(session: Session, owner: str, now: datetime, lease_seconds: int,
              limit: int = 1, *, destinations: Collection[str] | None = None,
              busy: Collection[int] = ()) -> list[JobRecord]:
    """Lease up to ``limit`` due jobs to ``owner`` (see the module docstring).

    With ``destinations``, only jobs for those (the destinations whose window
    is open now) are taken; the others stay pending, their attempts untouched.
    A destination never has more than its ``peer.max_associations`` jobs
    ``sending`` under an unexpired lease, across all forwarders and nodes: on
    PostgreSQL its peer row is locked ``FOR UPDATE SKIP LOCKED`` while its
    jobs are counted and claimed (a forwarder that finds it locked leaves that
    destination to the one claiming for it), and on SQLite the write
    transaction serialises the claims. A job whose destination is not a
    registered peer counts as having one association (it fails when sent).
    Destinations are served in the order of their most urgent due job. A
    job backing off whose last change is later than ``now`` is due: the wall
    clock stepped back (RELIABILITY T30), so one early attempt, not a wait
    as long as the step. Jobs in ``busy`` (those the caller's process is
    sending) are never taken, whatever their lease says: a step forward of
    the wall clock makes a live lease look expired.
    """
    stepped_back = and_(ForwardJob.attempts > 0, ForwardJob.updated_at > now)
    due = or_(and_(ForwardJob.state == JobState.PENDING,
                   or_(ForwardJob.next_attempt_at <= now, stepped_back)),
              and_(ForwardJob.state == JobState.SENDING, ForwardJob.lease_expires_at < now))
    if destinations is not None:
        due = and_(due, ForwardJob.destination.in_(list(destinations)))
    if busy:
        due = and_(due, ForwardJob.id.not_in(list(busy)))
    postgresql = dialect_of(session) == "postgresql"
    waiting = list(session.scalars(
        select(ForwardJob.destination).where(due).group_by(ForwardJob.destination)
        .order_by(func.max(ForwardJob.priority).desc(), func.min(ForwardJob.next_attempt_at),
                  func.min(ForwardJob.id))))
    free = _free_associations(session, waiting, now, postgresql)
    jobs: list[ForwardJob] = []
    for destination in waiting:
        wanted = min(free.get(destination, 0), limit - len(jobs))
        if wanted <= 0:
            continue
        candidates = (select(ForwardJob).where(due, ForwardJob.destination == destination)
                      .order_by(ForwardJob.priority.desc(), ForwardJob.next_attempt_at,
                                ForwardJob.id).limit(wanted))
        if postgresql:
            candidates = candidates.with_for_update(skip_locked=True)
        jobs += session.scalars(candidates)
    for job in jobs:
        job.state = JobState.SENDING
        job.lease_owner = owner
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.attempts += 1
        job.updated_at = now
    session.flush()
    return [_record(session, job) for job in jobs]


def _free_associations(session: Session, destinations: list[str], now: datetime,
                       postgresql: bool) -> dict[str, int]:
    """How many more jobs each destination may have ``sending``, its peer row locked."""
    if not destinations:
        return {}
    limits = select(Peer.slug, Peer.max_associations).where(Peer.slug.in_(destinations))
    if postgresql:
        limits = limits.with_for_update(skip_locked=True)
    allowed = {str(slug): int(most) for slug, most in session.execute(limits)}
    known = set(session.scalars(select(Peer.slug).where(Peer.slug.in_(destinations))))
    for destination in destinations:
        if destination not in known:
            allowed[destination] = 1
    busy = {str(slug): int(count) for slug, count in session.execute(
        select(ForwardJob.destination, func.count())
        .where(ForwardJob.destination.in_(list(allowed)),
               ForwardJob.state == JobState.SENDING, ForwardJob.lease_expires_at >= now)
        .group_by(ForwardJob.destination))}
    return {slug: most - busy.get(slug, 0) for slug, most in allowed.items()}


def items_to_send(session: Session, job_id: int) -> list[ItemToSend]:
    """The pending items of a job with their stored files, in instance order."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax_uid,
               Instance.file_path)
        .join(ForwardItem, ForwardItem.sop_instance_uid == Instance.sop_instance_uid)
        .where(ForwardItem.job_fk == job_id, ForwardItem.state == ItemState.PENDING)
        .order_by(Instance.series_fk, Instance.instance_number, Instance.id)).all()
    results = session.execute(
        select(CaseResult.sop_instance_uid, CaseResult.sop_class_uid,
               CaseResult.transfer_syntax_uid, CaseResult.file_path)
        .join(ForwardItem, ForwardItem.sop_instance_uid == CaseResult.sop_instance_uid)
        .where(ForwardItem.job_fk == job_id, ForwardItem.state == ItemState.PENDING)
        .order_by(CaseResult.id)).all()
    return ([ItemToSend(*row) for row in rows]
            + [ItemToSend(*row, reidentified=True) for row in results])


def record_items(session: Session, job_id: int,
                 outcomes: Iterable[tuple[str, ItemState, int | None]]) -> None:
    """Keep each instance's outcome: ``(sop_instance_uid, state, DICOM status)``.

    One UPDATE per distinct (state, status), usually one for a whole batch.
    """
    by_outcome: dict[tuple[ItemState, int | None], list[str]] = {}
    for sop_instance_uid, state, status in outcomes:
        by_outcome.setdefault((state, status), []).append(sop_instance_uid)
    for (state, status), uids in by_outcome.items():
        session.execute(update(ForwardItem).where(
            ForwardItem.job_fk == job_id, ForwardItem.sop_instance_uid.in_(uids))
            .values(state=state, status=status))


def renew_lease(session: Session, job_id: int, owner: str, now: datetime,
                lease_seconds: int) -> bool:
    """Extend the owner's lease to ``now + lease_seconds``; ``False`` if it holds it no more.

    For a forwarder that is still at work on the job (waiting for a Storage
    Commitment result), so that no other takes it up meanwhile.
    """
    renewed = cast(CursorResult[Any], session.execute(update(ForwardJob).where(
        ForwardJob.id == job_id, ForwardJob.state == JobState.SENDING,
        ForwardJob.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))))
    return renewed.rowcount > 0


def finish(session: Session, job_id: int, owner: str, now: datetime, policy: RetryPolicy, *,
           error: str = "", confirmed_by: str = "", give_up: bool = False) -> JobRecord | None:
    """Close the owner's attempt: done, retried later, or failed; ``None`` if the lease was lost.

    The job is done when no item is pending and none failed; failed when an
    item was refused (``give_up``) or, after an ``error``, the attempts ran
    out; pending again after the policy's delay on another ``error``; and
    pending at once when, without error, items are left (instances that
    joined the job while it was being sent).
    """
    job = session.get(ForwardJob, job_id)
    if job is None or job.state != JobState.SENDING or job.lease_owner != owner:
        return None
    record = _record(session, job)
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = now
    if not record.pending and not record.failed:
        job.state = JobState.DONE
        job.confirmed_by = confirmed_by
        job.last_error = ""
        cases.on_job_done(session, job.id, job.study_instance_uid, job.destination, now)
    elif give_up or record.failed or (error and job.attempts >= policy.max_attempts):
        job.state = JobState.FAILED
        job.last_error = error or dead_letter_reason(session, job.id, record.failed)
    elif error:
        job.state = JobState.PENDING
        job.next_attempt_at = now + policy.delay(job.attempts)
        job.last_error = error
    else:
        job.state = JobState.PENDING
        job.next_attempt_at = now
    session.flush()
    return _record(session, job)


def get(session: Session, job_id: int) -> JobRecord | None:
    """The job with this id, or ``None``."""
    job = session.get(ForwardJob, job_id)
    return None if job is None else _record(session, job)


def list_jobs(session: Session, states: Sequence[JobState] = (), *,
              study_instance_uid: str | None = None) -> list[JobRecord]:
    """Jobs, newest first, optionally only in ``states`` or of one study."""
    query = select(ForwardJob).order_by(ForwardJob.id.desc())
    if states:
        query = query.where(ForwardJob.state.in_(states))
    if study_instance_uid is not None:
        query = query.where(ForwardJob.study_instance_uid == study_instance_uid)
    return [_record(session, job) for job in session.scalars(query)]


def retry(session: Session, job_id: int, now: datetime) -> JobRecord:
    """Send a failed or cancelled job again now: refused items become pending, attempts restart.

    Raises
    ------
    StorageError
        When the job is not failed or cancelled, or another job for the same
        study and destination is open.
    """
    job = session.get(ForwardJob, job_id)
    if job is None:
        raise StorageError(f"forward job {job_id}: no such job")
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise StorageError(f"forward job {job_id}: expected a failed or cancelled job, "
                           f"it is {JobState(job.state).value}")
    other = session.scalar(select(ForwardJob.id).where(
        ForwardJob.study_instance_uid == job.study_instance_uid,
        ForwardJob.destination == job.destination, ForwardJob.state.in_(OPEN_STATES)))
    if other is not None:
        raise StorageError(f"forward job {job_id}: job {other} for the same study and "
                           f"destination is still open")
    session.execute(update(ForwardItem).where(
        ForwardItem.job_fk == job.id, ForwardItem.state == ItemState.FAILED)
        .values(state=ItemState.PENDING, status=None))
    job.state = JobState.PENDING
    job.attempts = 0
    job.next_attempt_at = now
    job.updated_at = now
    session.flush()
    return _record(session, job)


def cancel(session: Session, job_id: int, now: datetime) -> JobRecord:
    """Stop a pending job (a job being sent is stopped when its attempt ends).

    Raises
    ------
    StorageError
        When the job is done or failed already.
    """
    job = session.get(ForwardJob, job_id)
    if job is None:
        raise StorageError(f"forward job {job_id}: no such job")
    if job.state not in OPEN_STATES:
        raise StorageError(f"forward job {job_id}: expected a pending or sending job, "
                           f"it is {JobState(job.state).value}")
    job.state = JobState.CANCELLED
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = now
    session.flush()
    return _record(session, job)


def unrouted_stable(session: Session, now: datetime, stable_after_seconds: int,
                    limit: int = 100) -> list[str]:
    """Studies to route now: active, quiet for ``stable_after_seconds``, new since last routed.

    A study is stable once no instance has arrived for that long; it needs
    routing when it never was, or when an instance was indexed after it was
    (indexing clears ``routed_at``): a follow-up. On PostgreSQL the rows are
    locked ``FOR UPDATE SKIP LOCKED`` until the caller commits, so sweeps on
    several nodes share the work.
    """
    cutoff = now - timedelta(seconds=stable_after_seconds)
    query = (select(Study.study_instance_uid)
             .where(Study.state == StudyState.ACTIVE, Study.last_received_at <= cutoff,
                    Study.routed_at.is_(None))
             .order_by(Study.last_received_at).limit(limit))
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [str(uid) for uid in session.scalars(query)]


def mark_routed(session: Session, study_instance_uid: str, now: datetime) -> None:
    """Record that the routes were applied to a study at ``now``."""
    session.execute(update(Study).where(Study.study_instance_uid == study_instance_uid)
                    .values(routed_at=now))
