"""Why a forward job failed for good, in words an administrator can act on.

A job is a dead letter (``failed``) when the destination refused instances
(PS3.4 B.2.3: Axxx other than A7xx, Cxxx; the statuses are kept per item), or
when the gateway could not send some at all: no presentation context the
destination accepted for them, or they cannot be de-identified for its
pseudonym space or decompressed for it. Those have no status; the
forwarder's log names each instance and why.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .queue_models import ForwardItem, ItemState

__all__ = ["dead_letter_reason"]


def dead_letter_reason(session: Session, job_id: int, failed: int) -> str:
    """The reason kept on a job whose ``failed`` instances ended it (see the module notes)."""
    statuses = list(session.scalars(select(ForwardItem.status).where(
        ForwardItem.job_fk == job_id, ForwardItem.state == ItemState.FAILED)))
    unsent = statuses.count(None)
    refused = len(statuses) - unsent if statuses else failed
    parts = []
    if refused:
        codes = sorted({code for code in statuses if code is not None})
        shown = ", ".join(f"0x{code:04X}" for code in codes[:4])
        parts.append(f"{refused} instance(s) refused by the destination"
                     + (f" (status {shown})" * bool(shown)))
    if unsent:
        parts.append(f"{unsent} instance(s) not sent: no accepted presentation context, or "
                     "they cannot be de-identified for it or decompressed (see the log)")
    return "; ".join(parts)
