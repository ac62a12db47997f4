"""The audit trail: append-only records of security-relevant events.

RELIABILITY.md I5: rejected associations, refused move destinations,
re-identification and deletion leave a record; the writer puts it in the
same transaction as the change it describes. Times are UTC (T30). The
``detail`` text never holds PHI (ARCHITECTURE.md, privacy model): quote
remapped UIDs, pseudonyms and peer slugs only. This module offers no update
and no delete.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import StorageError
from .models import SHORT, UID, AuditEntry, AuditOutcome
from .records import AuditEvent

__all__ = ["DEFAULT_LIMIT", "list_events", "record"]

#: How many events ``list_events`` returns unless told otherwise.
DEFAULT_LIMIT: Final = 1000


def record(
    session: Session,
    event: str,
    actor: str,
    outcome: AuditOutcome | str,
    *,
    study_instance_uid: str | None = None,
    detail: str = "",
) -> None:
    """Append one audit record in the caller's transaction.

    Parameters
    ----------
    session : Session
        The caller's session.
    event : str
        What happened, a short code such as ``association-rejected``,
        ``move-refused``, ``reidentify``, ``study-delete``.
    actor : str
        Who: a calling AE title, or the CLI user.
    outcome : AuditOutcome | str
        ``success`` or ``failure``.
    study_instance_uid : str | None
        The new (remapped) StudyInstanceUID concerned, if any.
    detail : str
        Free text without PHI.

    Raises
    ------
    StorageError
        When ``event`` or ``actor`` is empty or too long, or the outcome is
        not ``success``/``failure``.
    """
    if not event or len(event) > SHORT:
        raise StorageError(f"audit event: expected 1-{SHORT} characters, got {len(event)}")
    if len(actor) > SHORT:
        raise StorageError(f"audit actor: expected at most {SHORT} characters")
    if study_instance_uid is not None and len(study_instance_uid) > UID:
        raise StorageError(f"audit study_instance_uid: expected at most {UID} characters")
    try:
        result = AuditOutcome(outcome)
    except ValueError:
        raise StorageError(
            f"audit outcome: expected success or failure, got {outcome!r}"
        ) from None
    session.add(AuditEntry(
        at=datetime.now(UTC), event=event, actor=actor, outcome=result,
        study_instance_uid=study_instance_uid, detail=detail,
    ))
    session.flush()


def list_events(
    session: Session,
    since: datetime | None = None,
    event: str | None = None,
    limit: int = DEFAULT_LIMIT,
    *,
    study_instance_uid: str | None = None,
) -> list[AuditEvent]:
    """List audit records in the order they were written.

    Parameters
    ----------
    session : Session
        The caller's session.
    since : datetime | None
        Only records at or after this timezone-aware time.
    event : str | None
        Only records of this event.
    limit : int
        At most this many (the oldest matching ones).
    study_instance_uid : str | None
        Only records about this (remapped) study.

    Returns
    -------
    list[AuditEvent]
    """
    if limit < 1:
        raise ValueError(f"limit: expected 1 or more, got {limit}")
    if since is not None and since.tzinfo is None:
        raise ValueError("since: expected a timezone-aware time, got a naive one")
    query = select(AuditEntry)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if event is not None:
        query = query.where(AuditEntry.event == event)
    if study_instance_uid is not None:
        query = query.where(AuditEntry.study_instance_uid == study_instance_uid)
    rows = session.execute(query.order_by(AuditEntry.id).limit(limit)).scalars()
    return [
        AuditEvent(
            id=row.id, at=row.at, event=row.event, actor=row.actor, outcome=row.outcome,
            study_instance_uid=row.study_instance_uid, detail=row.detail,
        )
        for row in rows
    ]
