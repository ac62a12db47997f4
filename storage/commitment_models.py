"""The Storage Commitment table: one row per N-ACTION request the forwarder made (PS3.4 J.3).

``storage_commitment``
    Keyed by the request's Transaction UID (0008,1195), generated for each
    request and never reused. It names the forward job and the destination
    peer, when it was asked and answered, the instances referenced (as the
    destination knows them: re-keyed UIDs for a destination with its own
    pseudonym space), and the answer of the N-EVENT-REPORT: its Event Type
    ID (1 all committed, 2 failures exist), how many were committed, and the
    failed ones with their Failure Reason (0008,1197). The report may arrive
    on the request's association or on one the destination opens, in this
    process or on another node sharing the database, in time or late: the
    row is the channel between them (:mod:`storage.commitments`).

Registered on :data:`storage.models.Base` (imported by :mod:`storage`), so
that migrations and the schema test see it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import SHORT, UID, Base, UTCDateTime

__all__ = ["StorageCommitment"]


class StorageCommitment(Base):
    """One Storage Commitment request and its result (see the module docstring)."""

    __tablename__ = "storage_commitment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    job_fk: Mapped[int] = mapped_column(ForeignKey("forward_job.id", ondelete="CASCADE"),
                                        index=True)
    destination: Mapped[str] = mapped_column(String(SHORT))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the referenced SOP Instance UIDs, as the destination knows them (a JSON list)
    requested_uids: Mapped[str] = mapped_column(Text)
    requested: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the peer whose N-EVENT-REPORT answered
    reported_by: Mapped[str | None] = mapped_column(String(SHORT))
    event_type: Mapped[int | None] = mapped_column(Integer)
    committed: Mapped[int | None] = mapped_column(Integer)
    failed: Mapped[int | None] = mapped_column(Integer)
    #: failed SOP Instance UID -> Failure Reason (null: not in the report at all), JSON
    failures: Mapped[str] = mapped_column(Text, server_default="{}")
