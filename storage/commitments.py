"""Storage Commitment requests and their results, keyed by Transaction UID (PS3.4 J.3).

The forwarder (:mod:`gateway.confirm`) records each N-ACTION it sends with
:func:`request`; whichever association brings the N-EVENT-REPORT
(:mod:`gateway.commitment`) records the answer with :func:`answer`; the
forwarder polls :func:`get` until the answer is there or its wait is over.
A report that comes after the wait is still recorded. Every operation runs
in the caller's transaction (:func:`storage.db.session_scope`). UIDs here
are the destination's (re-keyed for a destination with its own pseudonym
space), never an original.

:func:`delivered` lists what a job has delivered, with the SOP class and
series of each instance, for the request and for the C-FIND fallback.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .commitment_models import StorageCommitment
from .models import Instance, Series
from .queue_models import ForwardItem, ItemState

__all__ = ["CommitmentRecord", "Delivered", "answer", "delivered", "get", "list_for_job",
           "request"]


@dataclass(frozen=True, slots=True)
class CommitmentRecord:
    """One request and, once answered, its result (``answered_at`` is ``None`` until then)."""

    transaction_uid: str
    job_id: int
    destination: str
    requested_at: datetime
    requested_uids: tuple[str, ...]
    answered_at: datetime | None
    reported_by: str | None
    event_type: int | None
    committed: int | None
    failed: int | None
    #: failed SOP Instance UID -> Failure Reason (``None``: left out of the report)
    failures: Mapping[str, int | None]


@dataclass(frozen=True, slots=True)
class Delivered:
    """One instance a job delivered (item ``sent``), in the node's own UIDs."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str


def _record(row: StorageCommitment) -> CommitmentRecord:
    failures = {str(uid): (None if reason is None else int(reason))
                for uid, reason in json.loads(row.failures or "{}").items()}
    return CommitmentRecord(
        transaction_uid=row.transaction_uid, job_id=row.job_fk, destination=row.destination,
        requested_at=row.requested_at, requested_uids=tuple(json.loads(row.requested_uids)),
        answered_at=row.answered_at, reported_by=row.reported_by, event_type=row.event_type,
        committed=row.committed, failed=row.failed, failures=failures)


def request(session: Session, transaction_uid: str, job_id: int, destination: str,
            sop_instance_uids: Collection[str], now: datetime) -> CommitmentRecord:
    """Record an N-ACTION about to be sent for ``sop_instance_uids`` (the destination's UIDs)."""
    row = StorageCommitment(
        transaction_uid=transaction_uid, job_fk=job_id, destination=destination,
        requested_at=now, requested_uids=json.dumps(list(sop_instance_uids)),
        requested=len(sop_instance_uids), failures="{}")
    session.add(row)
    session.flush()
    return _record(row)


def answer(session: Session, transaction_uid: str, reported_by: str, event_type: int,
           committed: Collection[str], failed: Mapping[str, int | None],
           now: datetime) -> CommitmentRecord | None:
    """Record an N-EVENT-REPORT's result; ``None`` when no request has this Transaction UID.

    Only the requested instances count. One the report names in neither its
    Referenced SOP Sequence nor its Failed SOP Sequence is not committed
    (PS3.4 J.3.3.1.2: both event types list every referenced instance), and
    is kept among the failures without a reason. A later report for the
    same transaction replaces the earlier result.
    """
    row = session.scalars(select(StorageCommitment).where(
        StorageCommitment.transaction_uid == transaction_uid)).one_or_none()
    if row is None:
        return None
    requested = json.loads(row.requested_uids)
    wanted = set(requested)
    done = wanted & set(committed)
    failures: dict[str, int | None] = {uid: failed[uid] for uid in requested if uid in failed}
    failures.update({uid: None for uid in requested if uid not in done and uid not in failures})
    row.answered_at = now
    row.reported_by = reported_by
    row.event_type = event_type
    row.committed = len(done - failures.keys())
    row.failed = len(failures)
    row.failures = json.dumps(failures)
    session.flush()
    return _record(row)


def get(session: Session, transaction_uid: str) -> CommitmentRecord | None:
    """The request with this Transaction UID, or ``None``."""
    row = session.scalars(select(StorageCommitment).where(
        StorageCommitment.transaction_uid == transaction_uid)).one_or_none()
    return None if row is None else _record(row)


def list_for_job(session: Session, job_id: int) -> list[CommitmentRecord]:
    """The job's requests, oldest first."""
    rows = session.scalars(select(StorageCommitment).where(StorageCommitment.job_fk == job_id)
                           .order_by(StorageCommitment.id))
    return [_record(row) for row in rows]


def delivered(session: Session, job_id: int) -> list[Delivered]:
    """The job's delivered instances (items ``sent``), in instance order."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.sop_class_uid, Series.series_instance_uid)
        .join(ForwardItem, ForwardItem.sop_instance_uid == Instance.sop_instance_uid)
        .join(Series, Instance.series_fk == Series.id)
        .where(ForwardItem.job_fk == job_id, ForwardItem.state == ItemState.SENT)
        .order_by(Instance.series_fk, Instance.instance_number, Instance.id)).all()
    return [Delivered(*row) for row in rows]
