"""Orthanc as an oracle for C-FIND: the same de-identified files, the same queries, both answer.

Synthetic studies (four patients, eight studies, CT and MR series) are sent
to the node, which de-identifies and indexes them; the files it stored are
uploaded to an Orthanc on loopback through its REST API. Then at least 25
C-FIND queries (both information models, every level, wildcards, ranges,
UID lists, universal keys) go to both, and the matches must be the same
entities, with the same values for every key both return.

Where the two differ by design the query avoids the difference: time
ranges use full-precision bounds (the node widens a partial time to its
precision, Orthanc compares text) and hierarchical queries give every
higher-level unique key (the node requires them, Orthanc does not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)
from sqlalchemy import func, select

from gateway.node import Node
from storage.db import session_scope
from storage.models import Instance, Patient, PeerScope, Series, Study
from tests.conftest import wait_until
from tests.interop.orthanc import Orthanc
from tests.query_index import add_peer

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ORACLE = "ORACLE"
_ROOT = "1.2.826.0.1.3680043.10.1234"  # a fixed root: the same files every run

PATIENTS = [  # name, id, birth date, sex
    ("Doe^Jane", "PID-A", "19700101", "F"),
    ("DOE^JOHN", "PID-B", "19800515", "M"),
    ("Smith^Anna", "PID-C", "19551231", "F"),
    ("Brown^Bob", "PID-D", "20000229", "M"),
]
STUDY_PLAN = [  # patient, date, time, description, [(modality, series description, images)]
    (0, "20240105", "093000", "CT CHEST", [("CT", "AXIAL", 3), ("CT", "CORONAL", 2)]),
    (0, "20240131", "235959", "MR BRAIN", [("MR", "T1 AXIAL", 2), ("MR", "T2", 1)]),
    (1, "20240201", "101500", "CT ABDOMEN", [("CT", "AXIAL", 2)]),
    (1, "20231231", "120000", "MR KNEE", [("MR", "PD", 1), ("CT", "SCOUT", 1)]),
    (2, "20240115", "080000", "MR BRAIN", [("MR", "FLAIR", 2)]),
    (2, "20240301", "140000", "CT CHEST", [("CT", "CONTRAST", 1)]),
    (3, "20240110", "070000", "CT SPINE", [("CT", "SAGITTAL", 2), ("MR", "T2 SAG", 1)]),
    (3, "20240131", "000000", "MR BRAIN", [("MR", "DWI", 2)]),
]


def _image(number: int, patient: tuple[str, str, str, str], study: tuple[Any, ...],
           series_number: int, series: tuple[str, str, int], instance: int) -> Dataset:
    name, pid, birth, sex = patient
    _, date, time, description, _ = study
    modality, series_description, _ = series
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = f"{_ROOT}.{number}.{series_number}.{instance}"
    ds.StudyInstanceUID = f"{_ROOT}.{number}"
    ds.SeriesInstanceUID = f"{_ROOT}.{number}.{series_number}"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, birth, sex
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = date, time, description
    ds.AccessionNumber, ds.StudyID = f"ACC{number:04d}", f"S{number}"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, series_number, \
        series_description
    ds.BodyPartExamined = description.split()[-1]
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.Manufacturer = "ACME"
    ds.FrameOfReferenceUID = f"{_ROOT}.{number}.9"
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0, 0, instance]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if modality == "CT":
        ds.KVP, ds.RescaleIntercept, ds.RescaleSlope = 120, -1024, 1
        ds.AcquisitionNumber = 1
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "2D", 10, 500
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 1.5
    ds.PixelData = bytes(range(128))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _images() -> Iterator[Dataset]:
    for number, study in enumerate(STUDY_PLAN, start=1):
        patient = PATIENTS[study[0]]
        for series_number, series in enumerate(study[4], start=1):
            for instance in range(1, series[2] + 1):
                yield _image(number, patient, study, series_number, series, instance)


def _count(node: Node) -> int:
    with session_scope(node.app.engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


@dataclass
class Both:
    """The node and Orthanc holding the same de-identified files."""

    node: Node
    orthanc: Orthanc
    expected_instances: int


@pytest.fixture
def both(make_node: Callable[..., Node], orthanc: Callable[..., Orthanc]) -> Both:
    node = make_node()
    images = list(_images())
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in images]
    finally:
        assoc.release()
    assert statuses == [0x0000] * len(images)
    wait_until(lambda: _count(node) == len(images), timeout=120, what="every image indexed")
    add_peer(node.app.engine, "oracle", ORACLE, ("query",), PeerScope.ALL)
    pacs = orthanc({"oracle": [ORACLE, "127.0.0.1", 104]})
    stored = sorted((node.app.data_dir / "store").rglob("*.dcm"))
    assert len(stored) == len(images)
    for path in stored:
        assert pacs.upload(path)["Status"] == "Success"
    return Both(node, pacs, len(images))


def _find(port: int, ae_title: str, ds: Dataset, model: Any) -> list[Dataset]:
    ae = AE(ae_title=ORACLE)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, f"association with {ae_title} failed"
    try:
        responses = list(assoc.send_c_find(ds, model))
    finally:
        assoc.release()
    assert responses and responses[-1][0].Status == 0x0000, [
        s.Status if s else None for s, _ in responses]
    return [identifier for status, identifier in responses[:-1] if identifier is not None]


def _normalized(keyword: str, element: Any) -> Any:
    value = element.value
    if element.VR in ("IS", "DS", "US", "UL", "SS", "SL"):
        return {int(item) for item in value} if element.VM > 1 else int(value)
    if element.VM > 1:
        return {str(item).strip() for item in value}
    text = str(value).strip()
    if element.VR == "TM" and "." in text:
        text = text.rstrip("0").rstrip(".")
    if keyword in ("ModalitiesInStudy", "SOPClassesInStudy"):
        return {text}
    return text


@dataclass(frozen=True)
class Probe:
    name: str
    model: Any
    unique: str
    keys: dict[str, Any]


def _index(node: Node) -> dict[str, Any]:
    """What the node indexed (de-identified values), to build queries that hit and miss."""
    with session_scope(node.app.engine, readonly=True) as session:
        studies = session.execute(
            select(Study.study_instance_uid, Study.study_date, Study.study_time,
                   Patient.patient_id, Patient.patient_name)
            .join(Patient, Study.patient_fk == Patient.id).order_by(Study.id)).all()
        series = session.execute(select(Series.series_instance_uid, Study.study_instance_uid)
                                 .join(Study, Series.study_fk == Study.id)
                                 .order_by(Series.id)).all()
        instances = session.execute(
            select(Instance.sop_instance_uid, Series.series_instance_uid)
            .join(Series, Instance.series_fk == Series.id).order_by(Instance.id)).all()
    return {"studies": studies, "series": series, "instances": instances}


STUDY_KEYS = {key: "" for key in (
    "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "StudyDate",
    "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")}
SERIES_KEYS = {key: "" for key in (
    "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
    "NumberOfSeriesRelatedInstances")}
IMAGE_KEYS = {key: "" for key in ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")}
PATIENT_KEYS = {key: "" for key in (
    "PatientID", "PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")}


def _probes(index: dict[str, Any]) -> Iterator[Probe]:
    studies = index["studies"]
    first, second = studies[0], studies[2]
    name = first.patient_name
    dates = sorted({row.study_date for row in studies if row.study_date})
    low, high = dates[1], dates[-2]

    def study(name: str, **keys: Any) -> Probe:
        return Probe(name, STUDY_ROOT, "StudyInstanceUID",
                     {"QueryRetrieveLevel": "STUDY", **STUDY_KEYS, **keys})

    yield study("universal")
    yield study("PN exact", PatientName=name)
    yield study("PN other case", PatientName=name.lower())
    yield study("PN prefix wildcard", PatientName=name[:7].lower() + "*")
    yield study("PN suffix wildcard", PatientName="*" + name[-3:])
    yield study("PN question marks", PatientName=name[:5] + "??" + name[7:])
    yield study("PN one question mark too many", PatientName=name[:5] + "???" + name[7:])
    yield study("single value is not a prefix", StudyDescription="CT")
    yield study("PatientID exact", PatientID=second.patient_id)
    yield study("PatientID wildcard", PatientID=second.patient_id[:6] + "*")
    yield study("date exact", StudyDate=first.study_date)
    yield study("date range", StudyDate=f"{low}-{high}")
    yield study("date open start", StudyDate=f"-{low}")
    yield study("date open end", StudyDate=f"{high}-")
    yield study("time range", StudyTime="080000-140000")
    yield study("UID single", StudyInstanceUID=second.study_instance_uid)
    yield study("UID list", StudyInstanceUID=[row.study_instance_uid for row in studies[1:4]])
    yield study("modality", ModalitiesInStudy="MR")
    yield study("modalities, any of", ModalitiesInStudy=["CT", "MR"])
    yield study("description wildcard", StudyDescription="CT*")
    yield study("description suffix", StudyDescription="*BRAIN")
    yield study("description is case-sensitive", StudyDescription="ct*")
    yield study("time exact", StudyTime=first.study_time)
    yield study("two keys", ModalitiesInStudy="CT", StudyDate=f"{low}-")

    def patient(name: str, **keys: Any) -> Probe:
        return Probe(name, PATIENT_ROOT, "PatientID",
                     {"QueryRetrieveLevel": "PATIENT", **PATIENT_KEYS, **keys})

    yield patient("patients universal")
    yield patient("patients PN wildcard", PatientName=name[:7] + "*")
    yield patient("patients ID exact", PatientID=second.patient_id)
    yield Probe("patient root studies", PATIENT_ROOT, "StudyInstanceUID", {
        **STUDY_KEYS, "QueryRetrieveLevel": "STUDY", "PatientID": first.patient_id})

    uid = first.study_instance_uid
    series = [row.series_instance_uid for row in index["series"] if row.study_instance_uid == uid]

    def series_probe(name: str, model: Any = STUDY_ROOT, **keys: Any) -> Probe:
        higher = {"PatientID": first.patient_id} if model is PATIENT_ROOT else {}
        return Probe(name, model, "SeriesInstanceUID", {
            "QueryRetrieveLevel": "SERIES", **higher, "StudyInstanceUID": uid, **SERIES_KEYS,
            **keys})

    yield series_probe("series universal")
    yield series_probe("series modality", Modality="CT")
    yield series_probe("series description wildcard", SeriesDescription="*AL")
    yield series_probe("series UID list", SeriesInstanceUID=series[:1])
    yield series_probe("patient root series", PATIENT_ROOT)
    images = [row.sop_instance_uid for row in index["instances"]
              if row.series_instance_uid == series[0]]

    def image_probe(name: str, model: Any = STUDY_ROOT, **keys: Any) -> Probe:
        higher = {"PatientID": first.patient_id} if model is PATIENT_ROOT else {}
        return Probe(name, model, "SOPInstanceUID", {
            "QueryRetrieveLevel": "IMAGE", **higher, "StudyInstanceUID": uid,
            "SeriesInstanceUID": series[0], **IMAGE_KEYS, **keys})

    yield image_probe("images universal")
    yield image_probe("images UID list", SOPInstanceUID=[images[0], images[-1]])
    yield image_probe("images number", InstanceNumber="2")
    yield image_probe("patient root images", PATIENT_ROOT)


def _identifier(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_the_node_answers_as_orthanc_does(both: Both) -> None:
    probes = list(_probes(_index(both.node)))
    assert len(probes) >= 25
    compared = 0
    differences: dict[str, Any] = {}
    for probe in probes:
        ds = _identifier(probe.keys)
        ours = {str(r[probe.unique].value): r for r in _find(
            both.node.port, "GATEWAY", ds, probe.model)}
        theirs = {str(r[probe.unique].value): r for r in _find(
            both.orthanc.dicom_port, both.orthanc.ae_title, ds, probe.model)}
        if sorted(ours) != sorted(theirs):
            differences[probe.name] = {"node": sorted(ours), "orthanc": sorted(theirs)}
            continue
        for uid, mine in ours.items():
            other = theirs[uid]
            for keyword in probe.keys:
                if keyword not in mine or keyword not in other:
                    continue
                if mine[keyword].is_empty or other[keyword].is_empty:
                    if mine[keyword].is_empty != other[keyword].is_empty:
                        differences[f"{probe.name} {uid} {keyword}"] = (
                            mine[keyword].value, other[keyword].value)
                    continue
                a, b = _normalized(keyword, mine[keyword]), _normalized(keyword, other[keyword])
                compared += 1
                if a != b:
                    differences[f"{probe.name} {uid} {keyword}"] = (a, b)
    assert not differences
    assert compared > 300
    # every probe must have been able to tell matching from not matching
    sizes = {probe.name: len(_find(both.node.port, "GATEWAY", _identifier(probe.keys),
                                   probe.model)) for probe in probes}
    assert sizes["universal"] == len(STUDY_PLAN)
    assert sizes["description is case-sensitive"] == 0
    assert 0 < sizes["date range"] < len(STUDY_PLAN)
    assert 0 < sizes["PN prefix wildcard"] < len(STUDY_PLAN)
    assert sizes["time exact"] == 1
    assert sizes["PN one question mark too many"] == sizes["single value is not a prefix"] == 0
