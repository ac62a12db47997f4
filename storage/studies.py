"""Reading the study index: ``study list``, ``study show`` and a study's files.

Rows are read as plain columns and returned as frozen records
(:mod:`storage.records`), so no ORM object, and no stale one, leaves the
storage layer (STYLE.md sections 1 and 2). ``study list`` filters
(:class:`StudyFilter`) are the C-FIND keys of the STUDY level and go
through the same translation to SQL (:mod:`storage.search`, PS3.4
C.2.2.2), so an administrator sees what a specialist's query would find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from .conditions import match_condition
from .db import dialect_of
from .matching import Match, Universal, ValueKind
from .models import Instance, Patient, Series, Study, StudyState
from .records import SeriesSummary, StudyDetail, StudySummary
from .search import Level, Scope, key_conditions, visible

__all__ = [
    "DEFAULT_LIMIT", "StudyFilter", "get_study", "list_studies", "split_multi", "study_files",
]

#: How many studies ``list_studies`` returns unless told otherwise.
DEFAULT_LIMIT: Final = 100

_MULTI: Final = "\\"


def split_multi(joined: str) -> tuple[str, ...]:
    """Split a backslash-joined column (PS3.5 6.4) into its values; ``""`` gives ``()``."""
    return tuple(item for item in joined.split(_MULTI) if item)


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyFilter:
    """``study list`` filters, each a PS3.4 C.2.2.2 match (:func:`storage.matching.parse`).

    ``patient`` matches PatientID (as text) or PatientName (as a person
    name, ignoring case); ``study_date`` StudyDate; ``modality``
    ModalitiesInStudy (any series); ``description`` StudyDescription;
    ``sender`` the source peer's slug or the calling AE title. With
    ``scope``, only what a peer with that scope may find (never a
    quarantined study).
    """

    patient: Match = field(default_factory=Universal)
    study_date: Match = field(default_factory=Universal)
    modality: Match = field(default_factory=Universal)
    description: Match = field(default_factory=Universal)
    sender: Match = field(default_factory=Universal)
    scope: Scope | None = None

    def conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        """The ``WHERE`` conditions, built as a C-FIND's are."""
        found = key_conditions(Level.STUDY, {
            "study_date": self.study_date, "modalities_in_study": self.modality,
            "study_description": self.description}, dialect)
        for parts in (
            [match_condition(Patient.patient_id, self.patient, ValueKind.TEXT, dialect),
             match_condition(Patient.patient_name, self.patient, ValueKind.PERSON, dialect,
                             Patient.patient_name_folded)],
            [match_condition(Study.source_peer, self.sender, ValueKind.TEXT, dialect),
             match_condition(Study.calling_ae_title, self.sender, ValueKind.TEXT, dialect)],
        ):
            present = [part for part in parts if part is not None]
            if present:
                found.append(or_(*present))
        if self.scope is not None:
            found.append(visible(self.scope))
        return found


def _summary_query() -> Select[Study, Patient]:
    return select(Study, Patient).join(Patient, Study.patient_fk == Patient.id)


def list_studies(
    session: Session, *, limit: int = DEFAULT_LIMIT, quarantined: bool | None = None,
    where: StudyFilter | None = None,
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
    where : StudyFilter | None
        Only the studies these C-FIND style filters match.

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
    if where is not None:
        query = query.where(*where.conditions(dialect_of(session)))
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
