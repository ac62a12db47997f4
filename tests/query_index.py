"""A generated index for C-FIND tests: four patients, eight studies, series and instances.

The values are chosen so that every kind of PS3.4 C.2.2.2 matching has
something to find and something to miss: names differing only in case,
a ``%`` and an ``_`` in stored text (LIKE's own wildcards), dates either side
of month ends, times of every precision and an empty one, two senders, and
modalities shared and not. Tests state the expected matches with plain
Python predicates over :data:`STUDIES` (and friends), independently of the
SQL translation under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from storage import index, peers
from storage.crypto import MapCipher
from storage.db import session_scope
from storage.models import PeerScope
from storage.records import InstanceRecord, PeerRecord

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.33"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_CIPHER = MapCipher(b"q" * 32)
_T0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class PatientRow:
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str


@dataclass(frozen=True)
class StudyRow:
    uid: str
    patient: PatientRow
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring: str
    sender: str


@dataclass(frozen=True)
class SeriesRow:
    uid: str
    study: StudyRow
    modality: str
    number: int | None
    description: str
    body_part: str


@dataclass(frozen=True)
class InstanceRow:
    uid: str
    series: SeriesRow
    sop_class: str
    number: int | None


P1 = PatientRow("PID-0001", "Doe^Jane", "F", "19700101")
P2 = PatientRow("PID-0002", "DOE^JOHN", "M", "19800515")
P3 = PatientRow("PID-0003", "Smith^Anna", "F", "")
P4 = PatientRow("PID-1%_X", "O_Brien^Pat%", "O", "20000229")
PATIENTS = (P1, P2, P3, P4)


def _study(n: int, patient: PatientRow, date: str, time: str, description: str,
           referring: str, sender: str) -> StudyRow:
    return StudyRow(f"2.25.{1000 + n}", patient, date, time, f"ACC-{n:04d}", f"S{n}",
                    description, referring, sender)


STUDIES = (
    _study(1, P1, "20240105", "0930", "CT chest", "House^Greg", "clinic-a"),
    _study(2, P1, "20240131", "235959", "MR brain", "", "clinic-a"),
    _study(3, P2, "20240201", "101500.25", "CT abdomen 100%", "house^greg", "clinic-b"),
    _study(4, P2, "20231231", "12", "ct_lower limb", "Wilson^James", "clinic-a"),
    _study(5, P3, "20240115", "", "MR knee", "", "clinic-b"),
    _study(6, P3, "20240301", "080000.5", "CT [contrast]", "Cuddy^Lisa", "clinic-a"),
    _study(7, P4, "", "1200", "SR report", "", "clinic-b"),
    _study(8, P4, "20240131", "000000", "CT chest", "House^Greg", "clinic-a"),
)

_PLAN = {  # study number -> [(modality, body part, series description, instances)]
    1: [("CT", "CHEST", "axial", 3), ("CT", "CHEST", "coronal", 2)],
    2: [("MR", "HEAD", "t1", 2), ("MR", "HEAD", "t2", 1), ("SR", "", "report", 1)],
    3: [("CT", "ABDOMEN", "axial", 2)],
    4: [("CT", "LEG", "axial", 1), ("MR", "LEG", "pd", 1)],
    5: [("MR", "KNEE", "t1", 2)],
    6: [("CT", "CHEST", "contrast", 1)],
    7: [("SR", "", "report", 1)],
    8: [("CT", "CHEST", "axial", 2)],
}
_SOP = {"CT": CT, "MR": MR, "SR": SR}


def _series_and_instances() -> tuple[tuple[SeriesRow, ...], tuple[InstanceRow, ...]]:
    series: list[SeriesRow] = []
    instances: list[InstanceRow] = []
    for number, study in enumerate(STUDIES, start=1):
        for position, (modality, body, text, count) in enumerate(_PLAN[number], start=1):
            row = SeriesRow(f"{study.uid}.{position}", study, modality,
                            None if modality == "SR" else position, text, body)
            series.append(row)
            for item in range(1, count + 1):
                instances.append(InstanceRow(f"{row.uid}.{item}", row, _SOP[modality],
                                             None if modality == "SR" else item))
    return tuple(series), tuple(instances)


SERIES, INSTANCES = _series_and_instances()


def records() -> Iterator[InstanceRecord]:
    """One index record per instance, in study, series, instance order."""
    for count, item in enumerate(INSTANCES):
        series, study = item.series, item.series.study
        patient = study.patient
        yield InstanceRecord(
            patient_id=patient.patient_id, patient_name=patient.patient_name,
            patient_sex=patient.patient_sex, patient_birth_date=patient.patient_birth_date,
            study_instance_uid=study.uid, study_date=study.date, study_time=study.time,
            accession_number=study.accession, study_id=study.study_id,
            study_description=study.description, referring_physician_name=study.referring,
            series_instance_uid=series.uid, modality=series.modality,
            series_number=series.number, series_description=series.description,
            body_part_examined=series.body_part, sop_instance_uid=item.uid,
            sop_class_uid=item.sop_class, instance_number=item.number,
            transfer_syntax_uid=EXPLICIT_LE, file_path=f"00/00/{count:032d}.dcm",
            file_size=1000, sha256="0" * 64, received_sha256=f"{count:064d}",
            received_at=_T0 + timedelta(seconds=count), calling_ae_title="MODALITY",
            source_peer=study.sender,
        )


def populate(engine: Engine) -> None:
    """Index every generated instance."""
    with session_scope(engine) as session:
        for record in records():
            index.add_instance(session, record, [], _CIPHER)


def add_peer(engine: Engine, slug: str, ae_title: str, roles: tuple[str, ...],
             scope: PeerScope = PeerScope.SENT, port: int = 104) -> None:
    """Register a peer the node will admit from loopback."""
    with session_scope(engine) as session:
        peers.add(session, PeerRecord(slug=slug, ae_title=ae_title, host="127.0.0.1",
                                      port=port, roles=roles, scope=scope))


def modalities(study: StudyRow) -> set[str]:
    return {row.modality for row in SERIES if row.study == study}


def sop_classes(study: StudyRow) -> set[str]:
    return {row.sop_class for row in INSTANCES if row.series.study == study}


def series_of(study: StudyRow) -> list[SeriesRow]:
    return [row for row in SERIES if row.study == study]


def instances_of(series: SeriesRow) -> list[InstanceRow]:
    return [row for row in INSTANCES if row.series == series]
