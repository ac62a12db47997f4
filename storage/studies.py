"""Reading the study index: ``study list``, ``study show`` and a study's files.

Rows are read as plain columns and returned as frozen records
(:mod:`storage.records`), so no ORM object, and no stale one, leaves the
storage layer (STYLE.md sections 1 and 2).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from .models import Instance, Patient, Series, Study, StudyState
from .records import SeriesSummary, StudyDetail, StudySummary

__all__ = ["DEFAULT_LIMIT", "get_study", "list_studies", "split_multi", "study_files"]

#: How many studies ``list_studies`` returns unless told otherwise.
DEFAULT_LIMIT: Final = 100

_MULTI: Final = "\\"


def split_multi(joined: str) -> tuple[str, ...]:
    """Split a backslash-joined column (PS3.5 6.4) into its values; ``""`` gives ``()``."""
    return tuple(item for item in joined.split(_MULTI) if item)


def _summary_query() -> Select[Study, Patient]:
    return select(Study, Patient).join(Patient, Study.patient_fk == Patient.id)


def list_studies(
    session: Session, *, limit: int = DEFAULT_LIMIT, quarantined: bool | None = None
) -> list[StudySummary]:
    """List indexed studies, most recently received first.

    Parameters
    ----------
    session : Session
        The caller's session.
    limit : int
        At most this many studies (1 or more).
    quarantined : bool | None
        ``True``: only quarantined studies; ``False``: only active ones;
        ``None``: all.

    Returns
    -------
    list[StudySummary]
        Ordered by ``last_received_at``, newest first.
    """
    if limit < 1:
        raise ValueError(f"limit: expected 1 or more, got {limit}")
    query = _summary_query()
    if quarantined is not None:
        state = StudyState.QUARANTINED if quarantined else StudyState.ACTIVE
        query = query.where(Study.state == state)
    query = query.order_by(Study.last_received_at.desc(), Study.id.desc()).limit(limit)
    rows = session.execute(query.execution_options(populate_existing=True)).all()
    return [
        StudySummary(
            study_instance_uid=study.study_instance_uid,
            patient_id=patient.patient_id,
            patient_name=patient.patient_name,
            study_date=study.study_date,
            study_description=study.study_description,
            modalities_in_study=split_multi(study.modalities_in_study),
            number_of_study_related_series=study.number_of_study_related_series,
            number_of_study_related_instances=study.number_of_study_related_instances,
            source_peer=study.source_peer,
            calling_ae_title=study.calling_ae_title,
            state=study.state,
            last_received_at=study.last_received_at,
        )
        for study, patient in rows
    ]


def get_study(session: Session, study_instance_uid: str) -> StudyDetail | None:
    """Return one study with its series and their instance counts.

    Parameters
    ----------
    session : Session
        The caller's session.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.

    Returns
    -------
    StudyDetail | None
        ``None`` when no such study is indexed. Series are ordered by
        SeriesNumber (missing numbers last).
    """
    row = session.execute(
        _summary_query()
        .where(Study.study_instance_uid == study_instance_uid)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        return None
    study, patient = row
    series = session.execute(
        select(Series)
        .where(Series.study_fk == study.id)
        .order_by(Series.series_number.is_(None), Series.series_number, Series.id)
        .execution_options(populate_existing=True)
    ).scalars()
    return StudyDetail(
        study_instance_uid=study.study_instance_uid,
        patient_id=patient.patient_id,
        patient_name=patient.patient_name,
        patient_sex=patient.patient_sex,
        patient_birth_date=patient.patient_birth_date,
        study_date=study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        study_id=study.study_id,
        study_description=study.study_description,
        referring_physician_name=study.referring_physician_name,
        modalities_in_study=split_multi(study.modalities_in_study),
        sop_classes_in_study=split_multi(study.sop_classes_in_study),
        number_of_study_related_series=study.number_of_study_related_series,
        number_of_study_related_instances=study.number_of_study_related_instances,
        source_peer=study.source_peer,
        calling_ae_title=study.calling_ae_title,
        state=study.state,
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
        series=tuple(
            SeriesSummary(
                series_instance_uid=item.series_instance_uid,
                modality=item.modality,
                series_number=item.series_number,
                series_description=item.series_description,
                body_part_examined=item.body_part_examined,
                number_of_series_related_instances=item.number_of_series_related_instances,
            )
            for item in series
        ),
    )


def study_files(session: Session, study_instance_uid: str) -> list[str]:
    """Return the file-store paths of a study's instances, series by series.

    Parameters
    ----------
    session : Session
        The caller's session.
    study_instance_uid : str
        The new (remapped) StudyInstanceUID.

    Returns
    -------
    list[str]
        Paths relative to the file store's root, in SeriesNumber then
        InstanceNumber order; empty for an unknown study.
    """
    return list(session.execute(
        select(Instance.file_path)
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Series.study_fk == Study.id)
        .where(Study.study_instance_uid == study_instance_uid)
        .order_by(Series.series_number.is_(None), Series.series_number, Series.id,
                  Instance.instance_number.is_(None), Instance.instance_number, Instance.id)
    ).scalars())
