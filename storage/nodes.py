"""What each node's spool still holds, so that the stability sweep on any node can wait for it.

ARCHITECTURE.md, scale-out, and routing: a study is routed once no instance
has arrived for ``stable_after_seconds``, judged by receive time, and the
sweep waits while ingest is behind (an entry accepted before the cut-off
still waits in a spool). The spool is node-local, so one node cannot see
another's backlog: each node reports, every poll, when the oldest entry
waiting in its spool was accepted (``node_spool``, one row per node), and
the sweep of every node waits for the oldest of them. A node that stopped
reporting (stopped or killed) is left out once its report is older than the
staleness the caller gives; what its spool holds is ingested when it starts
again and, if its study was routed meanwhile, goes as a follow-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import CursorResult, Integer, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from ._sql import insert_ignore, table_of
from .models import Base, UTCDateTime

__all__ = ["NodeSpool", "oldest_waiting", "report"]

#: a node: its host name and a digest of its spool folder
NODE: Final = 128


class NodeSpool(Base):
    """One node's spool as it last reported it (see the module docstring)."""

    __tablename__ = "node_spool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(NODE), unique=True)
    #: when the oldest entry waiting or being ingested was accepted; null: the spool is empty
    oldest_waiting_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())


def report(session: Session, node: str, oldest: datetime | None, now: datetime) -> None:
    """Record ``node``'s spool: the acceptance time of its oldest waiting entry, or ``None``."""
    values = {"oldest_waiting_at": oldest, "reported_at": now}
    updated = cast(CursorResult[Any], session.execute(
        update(NodeSpool).where(NodeSpool.node == node).values(**values)))
    if not updated.rowcount:
        # the first report of a node; a concurrent first report of the same node wins
        insert_ignore(session, table_of(NodeSpool), [{"node": node, **values}], ["node"])


def oldest_waiting(session: Session, reported_since: datetime) -> datetime | None:
    """The oldest entry waiting in any spool that reported since ``reported_since``."""
    return session.scalar(select(func.min(NodeSpool.oldest_waiting_at))
                          .where(NodeSpool.reported_at >= reported_since))
