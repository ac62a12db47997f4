"""The audit trail: append-only records of security-relevant events.

RELIABILITY.md I5: rejected associations, refused move destinations,
re-identification and deletion leave a record; the writer puts it in the
same transaction as the change it describes. Times are UTC (T30). The
``detail`` text never holds PHI (ARCHITECTURE.md, privacy model): quote
remapped UIDs, pseudonyms and peer slugs only. This module offers no update
and no delete.

Records can also leave the database: :func:`subscribe` registers a sink for
one engine, and every record reaches it once the transaction that wrote it
has committed (a rolled-back record never does). The gateway uses this for
its optional syslog copy (PS3.15 A.5, :mod:`gateway.auditlog`); a sink runs
in the committing thread and must not raise.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import CursorResult, Engine, event as sa_event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from ._sql import table_of
from .errors import StorageError
from .models import SHORT, UID, AuditEntry, AuditOutcome
from .records import AuditEvent

__all__ = ["DEFAULT_LIMIT", "Sink", "list_events", "record", "subscribe", "unsubscribe"]

logger = logging.getLogger(__name__)

#: How many events ``list_events`` returns unless told otherwise.
DEFAULT_LIMIT: Final = 1000

#: What receives committed records (see the module docstring).
Sink = Callable[[AuditEvent], None]

#: the session.info key under which records wait for their commit
_PENDING: Final = "storage.audit.pending"
_INSERT: Final = insert(table_of(AuditEntry))
_SINKS: weakref.WeakKeyDictionary[Engine, list[Sink]] = weakref.WeakKeyDictionary()


def subscribe(engine: Engine, sink: Sink) -> None:
    """Have ``sink`` receive every record committed through ``engine`` from now on."""
    _SINKS.setdefault(engine, []).append(sink)


def unsubscribe(engine: Engine, sink: Sink) -> None:
    """Stop sending records to ``sink`` (no error when it was not subscribed)."""
    sinks = _SINKS.get(engine, [])
    if sink in sinks:
        sinks.remove(sink)


def _engine_of(session: Session) -> Engine | None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    # an engine with execution options (a read-only session) stands for its own engine
    return getattr(engine, "_proxied", engine)


@sa_event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    pending: list[tuple[SessionTransaction | None, AuditEvent]] = session.info.pop(_PENDING, [])
    if not pending:
        return
    engine = _engine_of(session)
    for sink in list(_SINKS.get(engine, [])) if engine is not None else []:
        for _, item in pending:
            try:
                sink(item)
            except Exception:  # noqa: BLE001 - a sink never undoes a committed record
                logger.exception("audit sink failed event=%s", item.event)


@sa_event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, previous: SessionTransaction) -> None:
    """Forget the records the rolled-back transaction (or savepoint) and those inside it wrote."""
    pending: list[tuple[SessionTransaction | None, AuditEvent]] = session.info.get(_PENDING, [])
    kept = [(tx, item) for tx, item in pending if not _inside(tx, previous)]
    if kept:
        session.info[_PENDING] = kept
    else:
        session.info.pop(_PENDING, None)


def _inside(tx: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while tx is not None:
        if tx is ancestor:
            return True
        tx = tx.parent
    return False


def record(
    session: Session,
    event: str,
    actor: str,
    outcome: AuditOutcome | str,
    *,
    study_instance_uid: str | None = None,
    detail: str = "",
    at: datetime | None = None,
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
    at : datetime | None
        When it happened (timezone-aware), for a record written after the
        event; the current time by default.

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
    if at is not None and at.tzinfo is None:
        raise StorageError("audit at: expected a timezone-aware time, got a naive one")
    when = at or datetime.now(UTC)
    # a Core insert: every association and batch of stores writes one, and the ORM's unit
    # of work (an object, a flush) cost more than the statement
    inserted = cast(CursorResult[Any], session.execute(_INSERT, {
        "at": when, "event": event, "actor": actor, "outcome": result,
        "study_instance_uid": study_instance_uid, "detail": detail})).inserted_primary_key
    if inserted is None:
        raise StorageError("audit record: the database returned no id for it")
    written = AuditEvent(id=inserted[0], at=when, event=event, actor=actor, outcome=result,
                         study_instance_uid=study_instance_uid, detail=detail)
    current = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((current, written))


def _event(row: AuditEntry) -> AuditEvent:
    return AuditEvent(
        id=row.id, at=row.at, event=row.event, actor=row.actor, outcome=row.outcome,
        study_instance_uid=row.study_instance_uid, detail=row.detail,
    )


def list_events(
    session: Session,
    since: datetime | None = None,
    event: str | None = None,
    limit: int = DEFAULT_LIMIT,
    *,
    newest: bool = False,
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
        At most this many: the oldest matching ones, or with ``newest`` the
        most recent ones (still listed oldest first).
    newest : bool
        Keep the most recent ``limit`` records instead of the oldest.
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
    order = AuditEntry.id.desc() if newest else AuditEntry.id
    found = [_event(row) for row in session.execute(query.order_by(order).limit(limit)).scalars()]
    return found[::-1] if newest else found
