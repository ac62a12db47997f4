"""Quarantine records: one row per spool file set aside, with its reason.

RELIABILITY.md I2: every received instance ends stored, quarantined with a
reason, or refused. The file itself sits in ``spool/quarantine/``
(:meth:`storage.spool.Spool.quarantine`); this table is what the CLI lists
and what an administrator releases. A reason never holds PHI.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ._sql import insert_ignore, table_of
from .models import QuarantineEntry
from .records import QuarantineRecord

__all__ = ["list_entries", "mark_released", "record"]


def record(
    session: Session,
    spool_name: str,
    reason: str,
    calling_ae_title: str,
    sop_instance_uid: str | None = None,
) -> None:
    """Record that spool entry ``spool_name`` was quarantined.

    Idempotent by spool name: a second record for the same held entry (a
    worker re-running after a crash) is ignored; an entry that was released
    and is quarantined again is held again with the new reason.

    Parameters
    ----------
    session : Session
        The caller's session.
    spool_name : str
        The generated spool entry name.
    reason : str
        Why, in words that hold no PHI.
    calling_ae_title : str
        Who sent it.
    sop_instance_uid : str | None
        The new (remapped) SOP Instance UID when it is known.
    """
    now = datetime.now(UTC)
    # an entry released after review and set aside again (e.g. by the residual-PHI gate)
    # is held again, with the new reason
    session.execute(
        update(QuarantineEntry)
        .where(QuarantineEntry.spool_name == spool_name, QuarantineEntry.released_at.is_not(None))
        .values(reason=reason, at=now, released_at=None)
    )
    insert_ignore(session, table_of(QuarantineEntry), [{
        "spool_name": spool_name,
        "reason": reason,
        "at": now,
        "calling_ae_title": calling_ae_title,
        "sop_instance_uid": sop_instance_uid,
        "released_at": None,
    }], ("spool_name",))


def list_entries(session: Session, *, released: bool = False) -> list[QuarantineRecord]:
    """List quarantine records, oldest first.

    Parameters
    ----------
    session : Session
        The caller's session.
    released : bool
        ``False``: only those still held; ``True``: all of them.

    Returns
    -------
    list[QuarantineRecord]
    """
    query = select(QuarantineEntry).order_by(QuarantineEntry.id)
    if not released:
        query = query.where(QuarantineEntry.released_at.is_(None))
    return [
        QuarantineRecord(
            id=row.id, spool_name=row.spool_name, reason=row.reason, at=row.at,
            calling_ae_title=row.calling_ae_title, sop_instance_uid=row.sop_instance_uid,
            released_at=row.released_at,
        )
        for row in session.execute(query.execution_options(populate_existing=True)).scalars()
    ]


def mark_released(session: Session, spool_name: str) -> bool:
    """Mark a held entry released (the caller moves the file and audits).

    Returns
    -------
    bool
        ``False`` when no held entry has that name.
    """
    result = session.execute(
        update(QuarantineEntry)
        .where(QuarantineEntry.spool_name == spool_name, QuarantineEntry.released_at.is_(None))
        .values(released_at=datetime.now(UTC))
    )
    return bool(getattr(result, "rowcount", 0))
