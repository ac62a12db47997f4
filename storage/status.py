"""What ``dicom-gateway status`` reads from the database: the queue's shape and what is held.

Aggregates only (counts and the oldest time), computed in SQL on both
databases, so that a monitoring probe stays cheap however long the queue
and the quarantine get.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import QuarantineEntry
from .queue_models import ForwardJob, JobState

__all__ = ["QueueCount", "oldest_pending", "quarantine_held", "queue_counts"]


@dataclass(frozen=True, slots=True)
class QueueCount:
    """How many forward jobs one destination has in one state."""

    destination: str
    state: JobState
    jobs: int


def queue_counts(session: Session) -> list[QueueCount]:
    """Forward jobs counted by destination and state, ordered by destination then state."""
    rows = session.execute(
        select(ForwardJob.destination, ForwardJob.state, func.count())
        .group_by(ForwardJob.destination, ForwardJob.state)
        .order_by(ForwardJob.destination, ForwardJob.state)
    ).all()
    return [QueueCount(destination=destination, state=JobState(state), jobs=int(count))
            for destination, state, count in rows]


def oldest_pending(session: Session) -> tuple[int, str, datetime] | None:
    """The oldest job still to be sent (pending or sending): its id, destination, creation time."""
    row = session.execute(
        select(ForwardJob.id, ForwardJob.destination, ForwardJob.created_at)
        .where(ForwardJob.state.in_([JobState.PENDING, JobState.SENDING]))
        .order_by(ForwardJob.created_at, ForwardJob.id)
        .limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]), row[2])


def quarantine_held(session: Session) -> int:
    """How many quarantined instances wait for a person (not released)."""
    count = session.execute(
        select(func.count()).select_from(QuarantineEntry)
        .where(QuarantineEntry.released_at.is_(None))
    ).scalar_one()
    return int(count)
