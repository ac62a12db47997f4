"""The query benchmark's corpus: de-identified-looking studies, in our index and in Orthanc.

One deterministic corpus (a seeded generator, no file input): by default
2,500 patients, 10,000 studies and 100,000 instances (ten per study, in one
to four series of CT, MR, CR or DX), study dates spread over 2014-2025. The
values look like what the node keeps after de-identification: PatientID
``ANON`` plus 16 base32 characters and PatientName ``ANON^`` plus the same
code, UIDs in the ``2.25.`` form, accession numbers and study IDs as
opaque codes, no referring physician.

The same corpus is written twice:

- into our index with bulk ``INSERT``s through the storage models (the rows
  and counts :func:`storage.index.add_instance` would have written, the
  folded person names included, every study already routed as on a node
  that keeps up), after the schema is migrated to its newest revision;
  pushing 100,000 files through DICOM and the de-identifier would take
  far longer and measure ingest, not queries;
- into Orthanc as real DICOM instances of 8x8 pixels made in memory with
  pydicom, uploaded through its REST API (``POST /instances``) by several
  threads at once. That takes minutes, so Orthanc's storage and index are
  built once per corpus and kept under ``bench-results/`` (git-ignored),
  named after a digest of the corpus parameters and of this generator's
  revision; a run starts Orthanc on that folder. Only queries are timed,
  so a kept folder changes no measured number.

:func:`check_same` compares the two after loading: the counts of patients,
studies, series and instances must be equal, or the benchmark stops.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import random
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Engine, func, insert, select

from storage import peers
from storage.db import session_scope
from storage.matching import fold
from storage.models import Instance, Patient, PeerScope, Series, Study, StudyState
from storage.records import PeerRecord

#: Bump when the generated values change: it renames Orthanc's kept folder.
REVISION = 1
#: The peer that queries in the benchmark: every study is in its scope.
BENCH_AE_TITLE = "BENCH"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SOURCE_PEER = "clinic-a"

#: modality -> (SOP Class UID, study descriptions, body parts, series descriptions)
_KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", ("CT CHEST", "CT ABDOMEN", "CT HEAD", "CT SPINE"),
           ("CHEST", "ABDOMEN", "HEAD", "SPINE"), ("AXIAL", "CORONAL", "SAGITTAL", "SCOUT")),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", ("MR BRAIN", "MR KNEE", "MR SPINE", "MR PELVIS"),
           ("BRAIN", "KNEE", "SPINE", "PELVIS"), ("T1", "T2", "FLAIR", "DWI")),
    "CR": ("1.2.840.10008.5.1.4.1.1.1", ("CR CHEST", "CR HAND", "CR FOOT", "CR PELVIS"),
           ("CHEST", "HAND", "FOOT", "PELVIS"), ("PA", "LAT", "AP", "OBLIQUE")),
    "DX": ("1.2.840.10008.5.1.4.1.1.1.1", ("DX CHEST", "DX KNEE", "DX SHOULDER", "DX HIP"),
           ("CHEST", "KNEE", "SHOULDER", "HIP"), ("PA", "LAT", "AP", "OBLIQUE")),
}
_FIRST_DAY = date(2014, 1, 1)
_DAYS = (date(2025, 12, 31) - _FIRST_DAY).days + 1
_RECEIVED = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
#: Routed once stable, as on a node that keeps up: no sweep has work during the benchmark.
_ROUTED = _RECEIVED + timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class PatientRow:
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_instance_uid: str
    modality: str
    series_number: int
    series_description: str
    body_part_examined: str
    instances: int


@dataclass(frozen=True, slots=True)
class StudyRow:
    patient: int  # index into Corpus.patients
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    series: tuple[SeriesRow, ...]

    @property
    def modality(self) -> str:
        return self.series[0].modality


@dataclass(frozen=True, slots=True)
class Corpus:
    """The generated patients and studies (instances are derived from their series)."""

    patients: tuple[PatientRow, ...]
    studies: tuple[StudyRow, ...]
    signature: str

    @property
    def instance_count(self) -> int:
        return sum(series.instances for study in self.studies for series in study.series)

    @property
    def series_count(self) -> int:
        return sum(len(study.series) for study in self.studies)


def _digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _uid(label: str) -> str:
    """A ``2.25.`` UID (PS3.5 B.2) derived from ``label``, as remapped UIDs look.

    Always 44 characters (39 digits after ``2.25.``), so that an instance's
    UID can be patched into a series' encoded template.
    """
    number = int.from_bytes(_digest(label)[:16], "big") % (9 * 10**38)
    return f"2.25.{10**38 + number}"


def _code(label: str) -> str:
    return base64.b32encode(_digest(label)[:10]).decode("ascii")


def instance_uid(series: SeriesRow, number: int) -> str:
    return _uid(f"instance {series.series_instance_uid} {number}")


def _split(total: int, parts: int) -> list[int]:
    """``total`` instances over ``parts`` series, the first ones a little larger."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def make_corpus(studies: int, per_study: int, seed: int = 2026) -> Corpus:
    """The corpus: ``studies`` studies of ``per_study`` instances, four studies a patient."""
    rng = random.Random(seed)
    patient_count = max(1, studies // 4)
    patients = []
    for number in range(patient_count):
        code = _code(f"patient {seed} {number}")
        born = _FIRST_DAY - timedelta(days=rng.randrange(365 * 5, 365 * 90))
        patients.append(PatientRow(f"ANON{code}", f"ANON^{code}", rng.choice("FFMMO"),
                                   born.strftime("%Y%m%d")))
    owners = list(range(patient_count)) + [rng.randrange(patient_count)
                                           for _ in range(studies - patient_count)]
    rng.shuffle(owners)
    rows = []
    for number, owner in enumerate(owners):
        modality = rng.choice(("CT", "CT", "MR", "MR", "CR", "DX"))
        _, descriptions, bodies, series_texts = _KINDS[modality]
        kind = rng.randrange(len(descriptions))
        series_count = min(per_study, rng.randint(1, 4))
        study_uid = _uid(f"study {seed} {number}")
        series = tuple(
            SeriesRow(_uid(f"series {study_uid} {position}"), modality, position,
                      series_texts[(kind + position) % len(series_texts)], bodies[kind], count)
            for position, count in enumerate(_split(per_study, series_count), start=1))
        day = _FIRST_DAY + timedelta(days=rng.randrange(_DAYS))
        seconds = rng.randrange(7 * 3600, 20 * 3600)
        rows.append(StudyRow(
            owner, study_uid, day.strftime("%Y%m%d"),
            f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
            _code(f"accession {study_uid}")[:16], _code(f"study id {study_uid}")[:8],
            descriptions[kind], series))
    signature = hashlib.sha256(
        f"{REVISION} {studies} {per_study} {seed}".encode()).hexdigest()[:16]
    return Corpus(tuple(patients), tuple(rows), signature)


# -- our index -------------------------------------------------------------------------------

def _index_rows(corpus: Corpus) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` in the order foreign keys need, ids assigned here."""
    for number, patient in enumerate(corpus.patients, start=1):
        yield "patient", {
            "id": number, "patient_id": patient.patient_id,
            "patient_name": patient.patient_name,
            "patient_name_folded": fold(patient.patient_name),
            "patient_sex": patient.patient_sex,
            "patient_birth_date": patient.patient_birth_date}
    series_id = instance_id = 0
    for study_id, study in enumerate(corpus.studies, start=1):
        sop_classes = sorted({_KINDS[series.modality][0] for series in study.series})
        yield "study", {
            "id": study_id, "patient_fk": study.patient + 1,
            "study_instance_uid": study.study_instance_uid, "study_date": study.study_date,
            "study_time": study.study_time, "accession_number": study.accession_number,
            "study_id": study.study_id, "study_description": study.study_description,
            "referring_physician_name": "", "referring_physician_name_folded": "",
            "modalities_in_study": "\\".join(sorted({s.modality for s in study.series})),
            "sop_classes_in_study": "\\".join(sop_classes),
            "number_of_study_related_series": len(study.series),
            "number_of_study_related_instances": sum(s.instances for s in study.series),
            "source_peer": SOURCE_PEER, "calling_ae_title": "MODALITY",
            "first_received_at": _RECEIVED, "last_received_at": _RECEIVED,
            "routed_at": _ROUTED, "state": StudyState.ACTIVE}
        for series in study.series:
            series_id += 1
            yield "series", {
                "id": series_id, "study_fk": study_id,
                "series_instance_uid": series.series_instance_uid,
                "modality": series.modality, "series_number": series.series_number,
                "series_description": series.series_description,
                "body_part_examined": series.body_part_examined,
                "number_of_series_related_instances": series.instances}
            for number in range(1, series.instances + 1):
                instance_id += 1
                yield "instance", {
                    "id": instance_id, "series_fk": series_id,
                    "sop_instance_uid": instance_uid(series, number),
                    "sop_class_uid": _KINDS[series.modality][0], "instance_number": number,
                    "transfer_syntax_uid": EXPLICIT_LE,
                    "file_path": f"{instance_id % 256:02x}/{instance_id:030d}.dcm",
                    "file_size": 1200, "sha256": f"{instance_id:064x}",
                    "received_sha256": f"{instance_id:064x}", "received_at": _RECEIVED,
                    "calling_ae_title": "MODALITY", "source_peer": SOURCE_PEER}


def load_index(engine: Engine, corpus: Corpus, batch: int = 5000) -> None:
    """Write the corpus into a freshly migrated, empty index, and the querying peer."""
    tables = {"patient": Patient.__table__, "study": Study.__table__,
              "series": Series.__table__, "instance": Instance.__table__}
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    order = list(tables)
    with engine.begin() as connection:
        def flush(upto: str) -> None:
            for name in order[:order.index(upto) + 1]:
                if pending[name]:
                    connection.execute(insert(tables[name]), pending[name])
                    pending[name] = []

        for name, row in _index_rows(corpus):
            pending[name].append(row)
            if len(pending[name]) >= batch:
                flush(name)
        flush("instance")
    with session_scope(engine) as session:
        peers.add(session, PeerRecord(slug="bench", ae_title=BENCH_AE_TITLE, host="127.0.0.1",
                                      port=104, roles=("query",), scope=PeerScope.ALL))


def index_counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine, readonly=True) as session:
        return {name: int(session.scalar(select(func.count()).select_from(model)) or 0)
                for name, model in (("patients", Patient), ("studies", Study),
                                    ("series", Series), ("instances", Instance))}


# -- Orthanc ---------------------------------------------------------------------------------

#: Stand-ins patched per instance in a series' encoded template (same lengths as the real ones).
_UID_STAND_IN = "2.25." + "1" * 39
_NUMBER_STAND_IN = "99"


def _template(patient: PatientRow, study: StudyRow, series: SeriesRow) -> bytes:
    """One series' instance, encoded by pydicom with stand-ins for its UID and number."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = _KINDS[series.modality][0]
    ds.SOPInstanceUID = _UID_STAND_IN
    ds.StudyDate, ds.StudyTime = study.study_date, study.study_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = series.series_description
    ds.PatientName, ds.PatientID = patient.patient_name, patient.patient_id
    ds.PatientBirthDate, ds.PatientSex = patient.patient_birth_date, patient.patient_sex
    ds.BodyPartExamined = series.body_part_examined
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID, ds.SeriesNumber = study.study_id, series.series_number
    ds.InstanceNumber = _NUMBER_STAND_IN
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(range(128))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _instances(corpus: Corpus, studies: range) -> Iterator[bytes]:
    """Every instance of ``studies``: its series' template with its UID and number put in."""
    number_element = b"\x20\x00\x13\x00IS\x02\x00" + _NUMBER_STAND_IN.encode()
    for index in studies:
        study = corpus.studies[index]
        patient = corpus.patients[study.patient]
        for series in study.series:
            template = _template(patient, study, series)
            if template.count(_UID_STAND_IN.encode()) != 2 or \
                    template.count(number_element) != 1 or series.instances > 99:
                raise RuntimeError("the instance template cannot be patched")
            for number in range(1, series.instances + 1):
                yield template.replace(_UID_STAND_IN.encode(), instance_uid(series, number).encode()
                                       ).replace(number_element,
                                                 number_element[:8] + f"{number:<2}".encode())


class _Uploader:
    """POST /instances over one kept-alive connection per thread (loopback only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def post(self, body: bytes) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=120)
        connection.request("POST", "/instances", body, {"Content-Type": "application/dicom"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"Orthanc refused an instance: {response.status} {answer[:200]!r}")


def upload(corpus: Corpus, http_port: int, threads: int = 4, chunk: int = 25) -> None:
    """Send every instance of the corpus to Orthanc, ``threads`` requests at a time."""
    uploader = _Uploader(http_port)
    total = len(corpus.studies)

    def send(start: int) -> int:
        count = 0
        for body in _instances(corpus, range(start, min(start + chunk, total))):
            uploader.post(body)
            count += 1
        return count

    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(threads) as pool:
        for count in pool.map(send, range(0, total, chunk)):
            done += count
            if done % 10000 < count:
                rate = done / (time.monotonic() - started)
                print(f"  Orthanc: {done} of {corpus.instance_count} instances "
                      f"({rate:.0f}/s)", flush=True)


def orthanc_folder(results: Path, corpus: Corpus) -> Path:
    """Where Orthanc's storage and index for ``corpus`` are kept."""
    return results / f"query-orthanc-{corpus.signature}"


def discard_others(results: Path, keep: Path | None) -> None:
    """Remove Orthanc folders kept for other corpora (and half-built ones), all but ``keep``."""
    for folder in results.glob("query-orthanc-*"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def check_same(ours: dict[str, int], orthanc_statistics: dict[str, Any]) -> None:
    """Stop unless Orthanc holds as many patients, studies, series, instances as our index."""
    theirs = {name: int(orthanc_statistics[f"Count{name.capitalize()}"]) for name in ours}
    if ours != theirs:
        raise RuntimeError(f"the two indexes differ: ours {ours}, Orthanc {theirs}")
