"""The study index: add one instance, and list, show, re-state or delete studies.

The read side lives in :mod:`storage.studies` and quarantine records in
:mod:`storage.quarantine`; both are re-exported here, so callers need only
this module.

``add_instance`` is the ingest worker's one write (ARCHITECTURE.md,
durability contract, point 2): patient, study, series and instance rows,
their counts, the folded person names C-FIND matches on
(:func:`storage.matching.fold`) and the pseudonym map, all in the caller's
transaction, keyed by SOP Instance UID so that re-running the spool is
harmless.

Concurrency (ARCHITECTURE.md, scale-out):

* PostgreSQL, READ COMMITTED: each row is created with ``INSERT ... ON
  CONFLICT DO NOTHING`` and then read, so two workers creating the same
  patient, study or series both succeed with one row. The study row is then
  locked with ``SELECT ... FOR UPDATE``, which serializes the writers of one
  study; counts are updated as ``n = n + 1`` and the sorted multi-valued
  attributes are merged under that lock.
* SQLite: every write transaction begins ``IMMEDIATE`` (:mod:`storage.db`),
  so writers run one after another.

The work runs in a savepoint: when the instance turns out to be a duplicate
or a conflict, nothing it wrote is kept (RELIABILITY.md T22: never silently
merge patients).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from ._sql import insert_ignore, table_of
from .crypto import MapCipher
from .errors import StorageError
from .matching import fold
from .models import UID, Instance, Patient, Series, Study, StudyState
from .pseudomap import add_entries
from .quarantine import record as record_quarantine
from .records import InstanceRecord, MapEntry
from .studies import get_study, list_studies, study_files

__all__ = [
    "AddOutcome",
    "add_instance",
    "delete_study",
    "get_study",
    "instance_exists",
    "list_studies",
    "record_quarantine",
    "set_study_state",
    "study_files",
]

logger = logging.getLogger(__name__)

#: The separator of multi-valued attributes (PS3.5 6.4).
MULTI: Final = "\\"


class AddOutcome(str, enum.Enum):
    """What :func:`add_instance` did.

    ``added``
        The instance is indexed (with any new patient, study, series).
    ``already_present``
        The same SOP Instance UID with the same received bytes is indexed:
        a repeat, nothing changed (RELIABILITY.md T22 a).
    ``conflict``
        The SOP Instance UID is indexed with other received bytes, or its
        series or study is indexed under another study or patient: nothing
        changed; the caller quarantines the file (T22 b).
    """

    ADDED = "added"
    ALREADY_PRESENT = "already_present"
    CONFLICT = "conflict"


class _Conflict(Exception):
    """The record contradicts what is indexed; the savepoint is rolled back."""


class _Duplicate(Exception):
    """Another transaction indexed the same SOP Instance UID first."""


# The ingest worker's statements, built once with bound parameters and run on the
# tables (SQLAlchemy Core): the SQL is what the ORM forms would send, without
# building, coercing and cache-keying a new statement object per instance, or
# the ORM's bulk-update bookkeeping (the session holds no mapped objects here).

@functools.cache
def _select_received_sha256() -> Any:
    instance = table_of(Instance)
    return (select(instance.c.received_sha256)
            .where(instance.c.sop_instance_uid == bindparam("b_uid")))


@functools.cache
def _select_id(model: type[Patient | Study | Series], column: str) -> Any:
    table = table_of(model)
    return select(table.c.id).where(table.c[column] == bindparam("b_value"))


@functools.cache
def _lock_study() -> Any:
    study = table_of(Study)
    return (select(study.c.id, study.c.patient_fk, study.c.modalities_in_study,
                   study.c.sop_classes_in_study, study.c.last_received_at)
            .where(study.c.study_instance_uid == bindparam("b_uid"))
            .with_for_update())


@functools.cache
def _select_series() -> Any:
    series = table_of(Series)
    return (select(series.c.id, series.c.study_fk)
            .where(series.c.series_instance_uid == bindparam("b_uid")))


@functools.cache
def _count_series() -> Any:
    series = table_of(Series)
    return (update(series).where(series.c.id == bindparam("b_id")).values(
        number_of_series_related_instances=series.c.number_of_series_related_instances + 1))


@functools.cache
def _count_study() -> Any:
    study = table_of(Study)
    return update(study).where(study.c.id == bindparam("b_id")).values(
        number_of_study_related_instances=study.c.number_of_study_related_instances + 1,
        number_of_study_related_series=(
            study.c.number_of_study_related_series + bindparam("b_new_series")),
        modalities_in_study=bindparam("b_modalities", type_=study.c.modalities_in_study.type),
        sop_classes_in_study=bindparam("b_sop_classes",
                                       type_=study.c.sop_classes_in_study.type),
        last_received_at=bindparam("b_last_received_at", type_=study.c.last_received_at.type),
        routed_at=None,  # a new instance: the routes apply again once the study is stable
    )


def instance_exists(session: Session, sop_instance_uid: str) -> tuple[bool, str | None]:
    """Tell whether an instance is indexed, and the digest of its received bytes.

    Parameters
    ----------
    session : Session
        The caller's session.
    sop_instance_uid : str
        The new (remapped) SOP Instance UID.

    Returns
    -------
    tuple[bool, str | None]
        ``(True, received_sha256)`` or ``(False, None)``.
    """
    found = session.execute(_select_received_sha256(),
                            {"b_uid": sop_instance_uid}).scalar_one_or_none()
    return (found is not None, found)


def add_instance(
    session: Session,
    record: InstanceRecord,
    map_entries: Sequence[MapEntry],
    cipher: MapCipher,
) -> AddOutcome:
    """Index one stored instance and its pseudonym map entries.

    Idempotent by SOP Instance UID (ARCHITECTURE.md, durability contract,
    point 2; RELIABILITY.md T22). Runs in the caller's transaction, which
    the caller commits together with its audit record and forward jobs.

    Parameters
    ----------
    session : Session
        The caller's session (:func:`storage.db.session_scope`).
    record : InstanceRecord
        The de-identified attributes and the stored file.
    map_entries : Sequence[MapEntry]
        The pseudonyms made for this instance; each ``(kind, pseudonym)``
        is written once.
    cipher : MapCipher
        Seals the originals of new map entries.

    Returns
    -------
    AddOutcome
        ``ADDED``, ``ALREADY_PRESENT`` or ``CONFLICT``.

    Raises
    ------
    StorageError
        When a record field breaks the schema's rules (too long a UID, a
        naive timestamp, a negative size).
    """
    _check(record)
    try:  # a repeat is found by the instance insert, and its savepoint undone
        with session.begin_nested():
            _index(session, record)
            add_entries(session, map_entries, cipher)
    except _Duplicate:
        outcome = _existing_outcome(session, record)
        if outcome is None:
            raise StorageError(
                f"instance {record.sop_instance_uid}: insert skipped but no row found"
            ) from None
        return outcome
    except _Conflict as exc:
        logger.warning("index conflict sop=%s reason=%s", record.sop_instance_uid, exc)
        return AddOutcome.CONFLICT
    return AddOutcome.ADDED


def _check(record: InstanceRecord) -> None:
    for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid",
                 "sop_class_uid", "transfer_syntax_uid"):
        value: str = getattr(record, name)
        if not value or len(value) > UID:
            raise StorageError(f"instance record {name}: expected 1-{UID} characters")
    if not record.patient_id:
        raise StorageError("instance record patient_id: expected a pseudonym, got an empty value")
    if record.received_at.tzinfo is None:
        raise StorageError("instance record received_at: expected a timezone-aware time")
    if record.file_size < 0:
        raise StorageError("instance record file_size: expected a size of 0 or more bytes")


def _existing_outcome(session: Session, record: InstanceRecord) -> AddOutcome | None:
    exists, received_sha256 = instance_exists(session, record.sop_instance_uid)
    if not exists:
        return None
    if received_sha256 == record.received_sha256:
        return AddOutcome.ALREADY_PRESENT
    logger.warning("index conflict sop=%s reason=other bytes under this SOP Instance UID",
                   record.sop_instance_uid)
    return AddOutcome.CONFLICT


def _id_of(session: Session, model: type[Patient | Study | Series],
           column: str, value: str) -> int:
    return int(session.execute(_select_id(model, column), {"b_value": value}).scalar_one())


def _index(session: Session, r: InstanceRecord) -> None:
    """Write the rows of one instance; raises ``_Conflict`` or ``_Duplicate``."""
    patient = {"patient_id": r.patient_id, "patient_name": r.patient_name,
               "patient_name_folded": fold(r.patient_name),
               "patient_sex": r.patient_sex, "patient_birth_date": r.patient_birth_date}
    inserted = insert_ignore(session, table_of(Patient), [patient], ("patient_id",))
    patient_fk = inserted[0] if inserted else _id_of(session, Patient, "patient_id", r.patient_id)

    study = {
        "patient_fk": patient_fk, "study_instance_uid": r.study_instance_uid,
        "study_date": r.study_date, "study_time": r.study_time,
        "accession_number": r.accession_number, "study_id": r.study_id,
        "study_description": r.study_description,
        "referring_physician_name": r.referring_physician_name,
        "referring_physician_name_folded": fold(r.referring_physician_name),
        "modalities_in_study": "", "sop_classes_in_study": "",
        "number_of_study_related_series": 0, "number_of_study_related_instances": 0,
        "source_peer": r.source_peer, "calling_ae_title": r.calling_ae_title,
        "first_received_at": r.received_at, "last_received_at": r.received_at,
        "state": StudyState.ACTIVE,
    }
    insert_ignore(session, table_of(Study), [study], ("study_instance_uid",))
    locked = session.execute(_lock_study(), {"b_uid": r.study_instance_uid}).one()
    if locked.patient_fk != patient_fk:
        raise _Conflict(f"study {r.study_instance_uid} is indexed under another patient")

    series = {
        "study_fk": locked.id, "series_instance_uid": r.series_instance_uid,
        "modality": r.modality, "series_number": r.series_number,
        "series_description": r.series_description,
        "body_part_examined": r.body_part_examined,
        "number_of_series_related_instances": 0,
    }
    inserted = insert_ignore(session, table_of(Series), [series], ("series_instance_uid",))
    if inserted:
        series_fk = inserted[0]
    else:
        found = session.execute(_select_series(), {"b_uid": r.series_instance_uid}).one()
        if found.study_fk != locked.id:
            raise _Conflict(f"series {r.series_instance_uid} is indexed under another study")
        series_fk = found.id

    instance = {
        "series_fk": series_fk, "sop_instance_uid": r.sop_instance_uid,
        "sop_class_uid": r.sop_class_uid, "instance_number": r.instance_number,
        "transfer_syntax_uid": r.transfer_syntax_uid, "file_path": r.file_path,
        "file_size": r.file_size, "sha256": r.sha256, "received_sha256": r.received_sha256,
        "received_at": r.received_at, "calling_ae_title": r.calling_ae_title,
        "source_peer": r.source_peer,
    }
    if not insert_ignore(session, table_of(Instance), [instance], ("sop_instance_uid",)):
        raise _Duplicate

    session.execute(_count_series(), {"b_id": series_fk})
    session.execute(_count_study(), {
        "b_id": locked.id, "b_new_series": 1 if inserted else 0,
        "b_modalities": _merged(locked.modalities_in_study, r.modality),
        "b_sop_classes": _merged(locked.sop_classes_in_study, r.sop_class_uid),
        "b_last_received_at": max(locked.last_received_at, r.received_at),
    })


def _merged(joined: str, value: str) -> str:
    """Add ``value`` to a sorted backslash-joined set (empty values are skipped)."""
    values = {item for item in joined.split(MULTI) if item}
    if value:
        values.add(value)
    return MULTI.join(sorted(values))


def set_study_state(session: Session, study_instance_uid: str, state: StudyState) -> bool:
    """Move a study to ``state`` (quarantine it, or release it to ``active``).

    The one place a study's state changes (STYLE.md section 1).

    Parameters
    ----------
    session : Session
        The caller's session.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.
    state : StudyState
        The new state.

    Returns
    -------
    bool
        ``False`` when no such study is indexed.
    """
    result = session.execute(
        update(Study).where(Study.study_instance_uid == study_instance_uid)
        .values(state=StudyState(state))
    )
    return bool(getattr(result, "rowcount", 0))


def delete_study(session: Session, study_instance_uid: str) -> list[str]:
    """Remove a study's study, series and instance rows.

    Nothing else changes: the patient row and the pseudonym map stay, and
    the caller removes the files after its commit and writes the audit
    record (RELIABILITY.md I5) in the same transaction.

    Parameters
    ----------
    session : Session
        The caller's session.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.

    Returns
    -------
    list[str]
        The file-store paths of the removed instances; empty when no such
        study is indexed.
    """
    study_fk = session.execute(
        select(Study.id).where(Study.study_instance_uid == study_instance_uid).with_for_update()
    ).scalar_one_or_none()
    if study_fk is None:
        return []
    paths = study_files(session, study_instance_uid)
    series_ids = select(Series.id).where(Series.study_fk == study_fk).scalar_subquery()
    session.execute(delete(Instance).where(Instance.series_fk.in_(series_ids)))
    session.execute(delete(Series).where(Series.study_fk == study_fk))
    session.execute(delete(Study).where(Study.id == study_fk))
    logger.info("study deleted study=%s files=%d", study_instance_uid, len(paths))
    return paths
