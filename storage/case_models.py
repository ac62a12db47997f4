"""Consultation cases: what was sent to an institute, and what came back (second opinions).

ARCHITECTURE.md, who uses it (a consulting institute may send results
back). A case is opened when a study is queued to a destination
(:func:`storage.jobs.enqueue`) and tells the whole trip of one study to one
institute and back:

``consult_case``
    One per (study, institute): the sending clinic (the study's source
    peer), the institute (the destination peer), the pseudonym space the
    institute saw (``shared``: the node's own; ``own``: re-keyed for it),
    where results return to, and the state (:class:`CaseState`).
``case_uid``
    The UID map the institute saw: each study, series and SOP instance UID
    of the case (the node's remapped UID) and the UID the institute holds
    for it (the same in a ``shared`` space; re-keyed in an ``own`` space,
    filled in by the node, which alone holds that space's key). Results are
    matched to their case through ``institute_uid``, only among the cases of
    the institute that sent them.
``case_result``
    One object the institute sent back, re-identified for the clinic: its
    new SOP Instance UID (the clinic's root), where the file is, and the
    UID the institute gave it (a pseudonymous value).

Registered on :data:`storage.models.Base` (imported by :mod:`storage`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import SHORT, UID, Base, UTCDateTime, _str_enum

__all__ = ["CaseResult", "CaseState", "CaseUid", "ConsultCase", "UidLevel"]


class CaseState(str, enum.Enum):
    """Where a case stands.

    ``sent`` its study is queued to the institute; ``delivered`` the
    institute received every instance queued; ``answered`` a result came
    back and was matched; ``returned`` results were delivered to the
    clinic; ``closed`` an administrator closed it (results no longer match).
    """

    SENT = "sent"
    DELIVERED = "delivered"
    ANSWERED = "answered"
    RETURNED = "returned"
    CLOSED = "closed"


class UidLevel(str, enum.Enum):
    """Which UID of the case a ``case_uid`` row holds."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class ConsultCase(Base):
    """One study sent to one institute (see the module docstring)."""

    __tablename__ = "consult_case"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", "institute"),
        Index("ix_consult_case_institute", "institute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    institute: Mapped[str] = mapped_column(String(SHORT))
    clinic: Mapped[str | None] = mapped_column(String(SHORT))
    #: the peer results go to when it is not the clinic itself
    return_to: Mapped[str | None] = mapped_column(String(SHORT))
    pseudonyms: Mapped[str] = mapped_column(String(16))
    #: the PatientID the institute holds (a pseudonym; ``None``: not yet computed)
    institute_patient_id: Mapped[str | None] = mapped_column(String(SHORT))
    state: Mapped[CaseState] = mapped_column(_str_enum(CaseState))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CaseUid(Base):
    """One UID of a case and the UID the institute holds for it (``None``: not yet computed)."""

    __tablename__ = "case_uid"
    __table_args__ = (
        UniqueConstraint("case_fk", "uid"),
        Index("ix_case_uid_institute_uid", "institute_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_fk: Mapped[int] = mapped_column(ForeignKey("consult_case.id", ondelete="CASCADE"))
    level: Mapped[UidLevel] = mapped_column(_str_enum(UidLevel))
    uid: Mapped[str] = mapped_column(String(UID))
    institute_uid: Mapped[str | None] = mapped_column(String(UID))


class CaseResult(Base):
    """One returned object, re-identified, waiting for or delivered to the clinic."""

    __tablename__ = "case_result"
    __table_args__ = (Index("ix_case_result_case_fk", "case_fk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_fk: Mapped[int] = mapped_column(ForeignKey("consult_case.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    institute_sop_instance_uid: Mapped[str] = mapped_column(String(UID))
    file_path: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
