"""The forward queue's tables: one job per (study, destination) delivery, one item per instance.

ARCHITECTURE.md, routing and forwarding; RELIABILITY.md (exactly once). The
database is the truth about what was sent: a job and its items survive any
crash, and the scheduler that wakes the forwarder holds no state.

``forward_job``
    One delivery of a study's instances to one destination peer. A study
    that gains instances after its job was delivered gets a follow-up job
    with just those (``kind = follow-up``); at most one open (pending or
    sending) job exists per (study, destination), which a partial unique
    index enforces on both databases. ``lease_owner``/``lease_expires_at``
    mark a job being sent; a lease that expired (its sender died) makes the
    job claimable again.
``forward_item``
    One instance of a job, with the DICOM status the destination answered.
    An item already ``sent`` is never sent again by a retry.

Registered on :data:`storage.models.Base` (imported by :mod:`storage`), so
that migrations and the schema test see them.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from .models import SHORT, UID, Base, UTCDateTime, _str_enum

__all__ = ["ForwardItem", "ForwardJob", "ItemState", "JobKind", "JobState"]


class JobState(str, enum.Enum):
    """Where a forward job stands.

    ``pending`` waits for its ``next_attempt_at`` (and its destination's
    window); ``sending`` is leased by one forwarder; ``done`` every item was
    delivered; ``failed`` the attempts ran out or an instance was refused
    for good (a dead letter, kept with the reason); ``cancelled`` an
    administrator stopped it.
    """

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: states in which a job still has work to do
OPEN_STATES = (JobState.PENDING, JobState.SENDING)


class JobKind(str, enum.Enum):
    """``initial``: the study as it was when routed; ``follow-up``: instances that came later;
    ``result``: re-identified results of a consultation case, returning to the clinic
    (:mod:`storage.cases`)."""

    INITIAL = "initial"
    FOLLOW_UP = "follow-up"
    RESULT = "result"


class ItemState(str, enum.Enum):
    """One instance of a job: waiting, delivered (0x0000 or a Bxxx warning), or refused."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class ForwardJob(Base):
    """One delivery of a study to one destination (see the module docstring)."""

    __tablename__ = "forward_job"
    __table_args__ = (
        Index("ix_forward_job_due", "state", "next_attempt_at"),
        Index("ix_forward_job_study_instance_uid", "study_instance_uid"),
        # at most one open job per (study, destination), on both databases
        Index("ix_forward_job_open", "study_instance_uid", "destination", unique=True,
              sqlite_where=text("state IN ('pending', 'sending')"),
              postgresql_where=text("state IN ('pending', 'sending')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    destination: Mapped[str] = mapped_column(String(SHORT))
    kind: Mapped[JobKind] = mapped_column(_str_enum(JobKind))
    state: Mapped[JobState] = mapped_column(_str_enum(JobState))
    route: Mapped[str | None] = mapped_column(String(SHORT))
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(SHORT))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, server_default="")
    confirmed_by: Mapped[str] = mapped_column(String(SHORT), server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ForwardItem(Base):
    """One instance of a job and what the destination answered for it."""

    __tablename__ = "forward_item"
    __table_args__ = (UniqueConstraint("job_fk", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_fk: Mapped[int] = mapped_column(ForeignKey("forward_job.id", ondelete="CASCADE"),
                                        index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID))
    state: Mapped[ItemState] = mapped_column(_str_enum(ItemState))
    status: Mapped[int | None] = mapped_column(Integer)
