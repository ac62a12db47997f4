"""Consultation cases: opened when a study is queued, moved along as it travels and returns.

The tables are :mod:`storage.case_models`. Every function runs in the
caller's transaction (:func:`storage.db.session_scope`); each state change
is one function here (STYLE.md section 1):

- :func:`track` (called by :func:`storage.jobs.enqueue`) opens the case of a
  (study, institute) or re-opens it for a follow-up, and records the UIDs
  queued; in a ``shared`` space the institute holds the node's UIDs, in an
  ``own`` space the node fills ``institute_uid`` in later
  (:func:`uids_to_fill`, :func:`fill_uids`), since only it holds that key;
- :func:`on_job_done` (called by :func:`storage.jobs.finish`) moves a case
  to ``delivered`` when its study reached the institute, and to
  ``returned`` when its results reached the clinic;
- :func:`match` finds the cases of one institute that hold given UIDs, and
  :func:`match_patient` those of a patient pseudonym the institute holds
  (filled in like the UIDs: :func:`patients_to_fill`, :func:`fill_patients`);
- :func:`add_result` records a re-identified result (``answered``);
- :func:`close` ends a case: results no longer match it;
- :func:`delivered_files` and :func:`forget_file`: a re-identified file is
  kept only until the clinic has it (ARCHITECTURE.md, privacy model: the
  node keeps de-identified data).

Values here are remapped UIDs, the institute's pseudonymous UIDs and peer
slugs: nothing identifies a patient.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .case_models import CaseResult, CaseState, CaseUid, ConsultCase, UidLevel
from .errors import StorageError
from .models import Instance, Patient, Peer, Series, Study
from .queue_models import ForwardItem, ForwardJob, ItemState, JobState

__all__ = ["CaseRecord", "ResultRecord", "add_result", "close", "delivered_files",
           "fill_patients", "fill_uids", "forget_file", "get", "has_result", "list_cases",
           "match", "match_patient", "on_job_done", "patients_to_fill", "result_jobs",
           "results_of", "set_return_to", "track", "uid_map", "uids_to_fill"]

#: states in which a result may still match the case
OPEN_CASE_STATES = (CaseState.SENT, CaseState.DELIVERED, CaseState.ANSWERED,
                    CaseState.RETURNED)


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """A case as the CLI shows it, with its UIDs and results counted."""

    id: int
    study_instance_uid: str
    institute: str
    clinic: str | None
    return_to: str | None
    pseudonyms: str
    state: CaseState
    created_at: datetime
    updated_at: datetime
    instances: int
    results: int
    institute_study_uid: str | None
    institute_patient_id: str | None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One result of a case: the UID the institute gave it and the clinic's new one."""

    sop_instance_uid: str
    sop_class_uid: str
    institute_sop_instance_uid: str
    received_at: datetime
    #: whether its re-identified file is still kept (removed once delivered)
    file_kept: bool = False


def _record(session: Session, case: ConsultCase) -> CaseRecord:
    instances = session.scalar(select(func.count()).select_from(CaseUid).where(
        CaseUid.case_fk == case.id, CaseUid.level == UidLevel.INSTANCE)) or 0
    results = session.scalar(select(func.count()).select_from(CaseResult).where(
        CaseResult.case_fk == case.id)) or 0
    study_uid = session.scalar(select(CaseUid.institute_uid).where(
        CaseUid.case_fk == case.id, CaseUid.level == UidLevel.STUDY))
    return CaseRecord(
        id=case.id, study_instance_uid=case.study_instance_uid, institute=case.institute,
        clinic=case.clinic, return_to=case.return_to, pseudonyms=case.pseudonyms,
        state=CaseState(case.state), created_at=case.created_at, updated_at=case.updated_at,
        instances=int(instances), results=int(results), institute_study_uid=study_uid,
        institute_patient_id=case.institute_patient_id)


def _chunks(values: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """``values`` in lists of at most ``size``: bound parameters per statement stay few."""
    chunk: list[str] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _transition(session: Session, case_id: int, before: Collection[CaseState],
                after: CaseState, now: datetime) -> bool:
    """Move a case from one of ``before`` to ``after``; ``False`` when it was in none of them.

    One conditional UPDATE, so that two transactions moving the same case
    (a forwarder finishing while an administrator closes it) never undo
    each other: the second sees the first's state, not the one it read.
    """
    result = session.execute(
        update(ConsultCase)
        .where(ConsultCase.id == case_id, ConsultCase.state.in_(list(before)))
        .values(state=after, updated_at=now)
        .execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def _fresh(session: Session, case_id: int) -> ConsultCase | None:
    return session.get(ConsultCase, case_id, populate_existing=True)


def track(session: Session, study_instance_uid: str, institute: str,
          sop_instance_uids: Collection[str], now: datetime) -> CaseRecord:
    """Open (or re-open for a follow-up) the case of a study queued to ``institute``.

    The study's UID, and the series and SOP instance UIDs of
    ``sop_instance_uids``, join the case's UID map. A closed case stays
    closed; a case sent again goes back to ``sent`` unless it was answered.
    """
    case = session.scalars(select(ConsultCase).where(
        ConsultCase.study_instance_uid == study_instance_uid,
        ConsultCase.institute == institute)).one_or_none()
    if case is None:
        found = session.execute(select(Study.source_peer, Patient.patient_id)
                                .join(Patient, Study.patient_fk == Patient.id)
                                .where(Study.study_instance_uid == study_instance_uid)).first()
        source, patient = (None, None) if found is None else found
        space = session.scalar(select(Peer.pseudonyms).where(Peer.slug == institute)) or "shared"
        case = ConsultCase(study_instance_uid=study_instance_uid, institute=institute,
                           clinic=source, return_to=None, pseudonyms=space,
                           institute_patient_id=patient if space != "own" else None,
                           state=CaseState.SENT, created_at=now, updated_at=now)
        session.add(case)
        session.flush()
    else:
        _transition(session, case.id, [CaseState.DELIVERED], CaseState.SENT, now)
    wanted = {study_instance_uid: UidLevel.STUDY}
    for chunk in _chunks(sop_instance_uids):
        for sop, series in session.execute(
                select(Instance.sop_instance_uid, Series.series_instance_uid)
                .join(Series, Instance.series_fk == Series.id)
                .where(Instance.sop_instance_uid.in_(chunk))):
            wanted.setdefault(series, UidLevel.SERIES)
            wanted[sop] = UidLevel.INSTANCE
    known: set[str] = set()
    for chunk in _chunks(wanted):
        known.update(session.scalars(select(CaseUid.uid).where(
            CaseUid.case_fk == case.id, CaseUid.uid.in_(chunk))))
    shared = case.pseudonyms != "own"
    session.add_all(CaseUid(case_fk=case.id, level=level, uid=uid,
                            institute_uid=uid if shared else None)
                    for uid, level in sorted(wanted.items()) if uid not in known)
    session.flush()
    return _record(session, _fresh(session, case.id) or case)


def uids_to_fill(session: Session, institute: str | None = None,
                 limit: int = 10_000) -> list[tuple[int, str, str]]:
    """``(row id, institute, uid)`` of UIDs whose institute UID is not computed yet."""
    query = (select(CaseUid.id, ConsultCase.institute, CaseUid.uid)
             .join(ConsultCase, CaseUid.case_fk == ConsultCase.id)
             .where(CaseUid.institute_uid.is_(None)).order_by(CaseUid.id).limit(limit))
    if institute is not None:
        query = query.where(ConsultCase.institute == institute)
    return [(int(row_id), str(slug), str(uid)) for row_id, slug, uid in session.execute(query)]


def fill_uids(session: Session, values: Iterable[tuple[int, str]]) -> None:
    """Record the institute's UID of ``case_uid`` rows: ``(row id, institute uid)``."""
    for row_id, institute_uid in values:
        row = session.get(CaseUid, row_id)
        if row is not None:
            row.institute_uid = institute_uid
    session.flush()


def patients_to_fill(session: Session, institute: str | None = None
                     ) -> list[tuple[int, str, str]]:
    """``(case id, institute, the node's patient pseudonym)`` of cases whose institute
    patient ID is not computed yet."""
    query = (select(ConsultCase.id, ConsultCase.institute, Patient.patient_id)
             .join(Study, Study.study_instance_uid == ConsultCase.study_instance_uid)
             .join(Patient, Study.patient_fk == Patient.id)
             .where(ConsultCase.institute_patient_id.is_(None)).order_by(ConsultCase.id))
    if institute is not None:
        query = query.where(ConsultCase.institute == institute)
    return [(int(case_id), str(slug), str(pid)) for case_id, slug, pid in session.execute(query)]


def fill_patients(session: Session, values: Iterable[tuple[int, str]]) -> None:
    """Record the patient ID the institute holds: ``(case id, institute patient id)``."""
    for case_id, patient_id in values:
        session.execute(update(ConsultCase).where(ConsultCase.id == case_id)
                        .values(institute_patient_id=patient_id)
                        .execution_options(synchronize_session=False))


def match_patient(session: Session, institute: str, patient_id: str) -> list[int]:
    """The open cases of ``institute`` whose patient it knows as ``patient_id``."""
    if not patient_id:
        return []
    return [int(case_id) for case_id in session.scalars(
        select(ConsultCase.id).where(ConsultCase.institute == institute,
                                     ConsultCase.state.in_(OPEN_CASE_STATES),
                                     ConsultCase.institute_patient_id == patient_id))]


def match(session: Session, institute: str, institute_uids: Collection[str]
          ) -> dict[int, int]:
    """``{case id: how many of the UIDs it holds}`` among ``institute``'s open cases."""
    if not institute_uids:
        return {}
    hits: dict[int, int] = {}
    for chunk in _chunks(sorted(set(institute_uids))):
        for case_id, count in session.execute(
                select(CaseUid.case_fk, func.count())
                .join(ConsultCase, CaseUid.case_fk == ConsultCase.id)
                .where(ConsultCase.institute == institute,
                       ConsultCase.state.in_(OPEN_CASE_STATES),
                       CaseUid.institute_uid.in_(chunk))
                .group_by(CaseUid.case_fk)):
            hits[int(case_id)] = hits.get(int(case_id), 0) + int(count)
    return hits


def uid_map(session: Session, case_id: int) -> dict[str, str]:
    """``{institute uid: node uid}`` of a case, as far as computed."""
    rows = session.execute(select(CaseUid.institute_uid, CaseUid.uid).where(
        CaseUid.case_fk == case_id, CaseUid.institute_uid.is_not(None)))
    return {str(theirs): str(ours) for theirs, ours in rows}


def add_result(session: Session, case_id: int, *, sop_instance_uid: str, sop_class_uid: str,
               transfer_syntax_uid: str, institute_sop_instance_uid: str, file_path: str,
               now: datetime) -> bool:
    """Record one re-identified result; ``False`` when it was recorded before (a repeat)."""
    case = session.get(ConsultCase, case_id)
    if case is None:
        raise StorageError(f"case {case_id}: no such case")
    if session.scalar(select(CaseResult.id).where(
            CaseResult.sop_instance_uid == sop_instance_uid)) is not None:
        return False
    session.add(CaseResult(case_fk=case_id, sop_instance_uid=sop_instance_uid,
                           sop_class_uid=sop_class_uid, transfer_syntax_uid=transfer_syntax_uid,
                           institute_sop_instance_uid=institute_sop_instance_uid,
                           file_path=file_path, received_at=now))
    session.flush()
    _transition(session, case_id, OPEN_CASE_STATES, CaseState.ANSWERED, now)
    return True


def on_job_done(session: Session, job_id: int, study_instance_uid: str, destination: str,
                now: datetime) -> None:
    """A job was delivered: its results reached the clinic, or its study the institute."""
    returned = list(session.scalars(
        select(CaseResult.case_fk).distinct()
        .join(ForwardItem, ForwardItem.sop_instance_uid == CaseResult.sop_instance_uid)
        .where(ForwardItem.job_fk == job_id)))
    for case_id in returned:
        _transition(session, case_id, [CaseState.ANSWERED], CaseState.RETURNED, now)
    sent = session.scalar(select(ConsultCase.id).where(
        ConsultCase.study_instance_uid == study_instance_uid,
        ConsultCase.institute == destination))
    if sent is not None:
        _transition(session, sent, [CaseState.SENT], CaseState.DELIVERED, now)


def delivered_files(session: Session, limit: int = 100) -> list[tuple[int, str]]:
    """``(result id, file path)`` of results the clinic has and whose file is still kept.

    A result is delivered once an item for it was sent in a job that is done
    and none for it is still pending; its re-identified file is then no
    longer needed. A job is done only once its delivery is confirmed, by
    Storage Commitment where the clinic supports it (PS3.4 J.3; RELIABILITY
    T29: "local purge only after Storage Commitment"): a C-STORE answered
    0x0000 whose commitment is still awaited keeps its file.
    """
    sent = (select(ForwardItem.sop_instance_uid)
            .join(ForwardJob, ForwardJob.id == ForwardItem.job_fk)
            .where(ForwardItem.state == ItemState.SENT, ForwardJob.state == JobState.DONE))
    waiting = (select(ForwardItem.sop_instance_uid)
               .where(ForwardItem.state == ItemState.PENDING))
    rows = session.execute(
        select(CaseResult.id, CaseResult.file_path)
        .where(CaseResult.file_path != "", CaseResult.sop_instance_uid.in_(sent),
               CaseResult.sop_instance_uid.not_in(waiting))
        .order_by(CaseResult.id).limit(limit))
    return [(int(result_id), str(path)) for result_id, path in rows]


def has_result(session: Session, sop_instance_uid: str) -> bool:
    """Whether a result with this (new) SOP Instance UID was recorded already."""
    return session.scalar(select(CaseResult.id).where(
        CaseResult.sop_instance_uid == sop_instance_uid)) is not None


def forget_file(session: Session, result_id: int) -> None:
    """Record that a delivered result's file was removed."""
    session.execute(update(CaseResult).where(CaseResult.id == result_id).values(file_path=""))


def get(session: Session, case_id: int) -> CaseRecord | None:
    """The case with this id, or ``None``."""
    case = _fresh(session, case_id)
    return None if case is None else _record(session, case)


def list_cases(session: Session, states: Sequence[CaseState] = (), *,
               institute: str | None = None, study_instance_uid: str | None = None
               ) -> list[CaseRecord]:
    """Cases, newest first, optionally only in ``states``, of one institute or one study."""
    query = (select(ConsultCase).order_by(ConsultCase.id.desc())
             .execution_options(populate_existing=True))
    if states:
        query = query.where(ConsultCase.state.in_(states))
    if institute is not None:
        query = query.where(ConsultCase.institute == institute)
    if study_instance_uid is not None:
        query = query.where(ConsultCase.study_instance_uid == study_instance_uid)
    return [_record(session, case) for case in session.scalars(query)]


def result_jobs(session: Session, case_id: int) -> list[int]:
    """The forward jobs that carry (or carried) results of a case back, oldest first."""
    return [int(job_id) for job_id in session.scalars(
        select(ForwardItem.job_fk).distinct()
        .join(CaseResult, ForwardItem.sop_instance_uid == CaseResult.sop_instance_uid)
        .where(CaseResult.case_fk == case_id).order_by(ForwardItem.job_fk))]


def results_of(session: Session, case_id: int) -> list[ResultRecord]:
    """The results of a case, oldest first."""
    rows = session.scalars(select(CaseResult).where(CaseResult.case_fk == case_id)
                           .order_by(CaseResult.id))
    return [ResultRecord(row.sop_instance_uid, row.sop_class_uid,
                         row.institute_sop_instance_uid, row.received_at, bool(row.file_path))
            for row in rows]


def close(session: Session, case_id: int, now: datetime) -> CaseRecord:
    """Close a case; raises :class:`StorageError` when there is none or it is closed."""
    if session.get(ConsultCase, case_id) is None:
        raise StorageError(f"case {case_id}: no such case")
    if not _transition(session, case_id, OPEN_CASE_STATES, CaseState.CLOSED, now):
        raise StorageError(f"case {case_id}: already closed")
    case = _fresh(session, case_id)
    assert case is not None
    return _record(session, case)


def set_return_to(session: Session, case_id: int, peer: str | None, now: datetime
                  ) -> CaseRecord:
    """Name the peer results of a case return to (``None``: the clinic itself)."""
    case = session.get(ConsultCase, case_id)
    if case is None:
        raise StorageError(f"case {case_id}: no such case")
    case.return_to = peer
    case.updated_at = now
    session.flush()
    return _record(session, case)
