"""anonymizer.reidentify: a returned object re-identified for the clinic (PS3.15 E.1 reversed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from anonymizer.reidentify import Originals, Provenance, reidentify
from gateway.results import referenced_uids

ORIGINALS = Originals(patient_id="PID-REAL-1", patient_name="REAL^PATIENT",
                      issuer_of_patient_id="HOSPITAL-A", patient_birth_date="19500101",
                      study_instance_uid="1.2.3.4.100", accession_number="ACC-REAL",
                      study_id="SID-REAL", patient_sex="M")
PROVENANCE = Provenance(institute="institute-a",
                        received_at=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
                        node_ae_title="GATEWAY")
NOW = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
# the UIDs the institute holds -> the clinic's originals
UIDS = {"2.25.1": "1.2.3.4.100", "2.25.2": "1.2.3.4.200", "2.25.3": "1.2.3.4.300",
        "2.25.4": "1.2.3.4.400"}


def _returned() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "ANON^X7Q", "ANONX7Q", "19400512"
    ds.PatientSex = "F"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "ANONX7Q"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = "2.25.1", "20190101", "120000"
    ds.AccessionNumber, ds.StudyID, ds.StudyDescription = "ANONACC", "ANONSID", "CT"
    ds.ReferringPhysicianName = "DUMMY^DOC"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = "9.9.9.1", "9.9.9.2"
    ds.FrameOfReferenceUID = "2.25.4"
    ds.PatientIdentityRemoved, ds.DeidentificationMethod = "YES", "Basic Profile"
    ds.add_new(0x00091010, "LO", "institute private")
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "2.25.3"
    series = Dataset()
    series.SeriesInstanceUID = "2.25.2"
    series.ReferencedSOPSequence = Sequence([ref])
    study = Dataset()
    study.StudyInstanceUID = "2.25.1"
    study.ReferencedSeriesSequence = Sequence([series])
    study.add_new(0x00100010, "PN", "NESTED^NAME")
    own = Dataset()
    own.ReferencedSOPInstanceUID = "9.9.9.1"  # the institute's own object, referenced
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.IdenticalDocumentsSequence = Sequence([own])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = "9.9.9.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _new_uid(uid: str) -> str:
    return f"1.2.826.0.1.3680043.8.498.{uid.replace('.', '')}"


def test_patient_and_study_are_the_clinic_s_and_nothing_the_institute_held_survives() -> None:
    given = _returned()
    out = reidentify(given, ORIGINALS, UIDS, _new_uid, PROVENANCE, NOW).dataset

    assert (out.PatientID, str(out.PatientName), out.IssuerOfPatientID,
            out.PatientBirthDate, out.PatientSex) == (
        "PID-REAL-1", "REAL^PATIENT", "HOSPITAL-A", "19500101", "M")
    assert "OtherPatientIDsSequence" not in out
    assert (out.StudyInstanceUID, out.AccessionNumber, out.StudyID) == (
        "1.2.3.4.100", "ACC-REAL", "SID-REAL")
    assert (out.StudyDate, out.StudyTime, out.ReferringPhysicianName) == ("", "", "")
    assert "StudyDescription" not in out and "DeidentificationMethod" not in out
    assert out.PatientIdentityRemoved == "NO"
    assert not any(elem.tag.is_private for elem in out)
    nested = out.CurrentRequestedProcedureEvidenceSequence[0]
    assert 0x00100010 not in nested
    text = str(out)
    assert not [v for v in ("ANON", "DUMMY", "19400512", "20190101") if v in text]
    assert given.PatientID == "ANONX7Q" and 0x00091010 in given  # the input is untouched


def test_references_resolve_to_the_clinic_s_uids_and_new_objects_get_the_node_s_root() -> None:
    result = reidentify(_returned(), ORIGINALS, UIDS, _new_uid, PROVENANCE, NOW)
    out = result.dataset
    study = out.CurrentRequestedProcedureEvidenceSequence[0]
    series = study.ReferencedSeriesSequence[0]
    assert (study.StudyInstanceUID, series.SeriesInstanceUID,
            series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) == (
        "1.2.3.4.100", "1.2.3.4.200", "1.2.3.4.300")
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.FrameOfReferenceUID == "1.2.3.4.400"
    assert out.SOPInstanceUID == _new_uid("9.9.9.1") == result.sop_instance_uid
    assert out.SeriesInstanceUID == _new_uid("9.9.9.2")
    # the same institute UID gets the same new UID wherever it stands
    assert out.IdenticalDocumentsSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert (result.restored_uids, result.new_uids) == (5, 2)


def test_where_the_opinion_came_from_is_in_the_contributing_equipment_sequence() -> None:
    given = _returned()
    earlier = Dataset()
    earlier.Manufacturer = "Scanner Co"
    earlier.PurposeOfReferenceCodeSequence = Sequence([Dataset()])
    given.ContributingEquipmentSequence = Sequence([earlier])
    given.Manufacturer = "Reading Station"
    out = reidentify(given, ORIGINALS, UIDS, _new_uid, PROVENANCE, NOW).dataset

    kept, institute, node = out.ContributingEquipmentSequence
    assert kept.Manufacturer == "Scanner Co"
    code = institute.PurposeOfReferenceCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "109102", "DCM", "Processing Equipment")
    assert (institute.Manufacturer, institute.InstitutionName,
            institute.ContributionDateTime) == (
        "Reading Station", "institute-a", "20261127100000+0000")
    assert node.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
    assert (node.StationName, node.ContributionDateTime) == ("GATEWAY", "20261127110000+0000")


def test_pixel_data_read_lazily_stays_on_disk_and_is_written_whole(tmp_path: Path) -> None:
    given = _returned()
    given.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    given.Rows, given.Columns, given.BitsAllocated, given.BitsStored = 512, 1024, 16, 16
    given.HighBit, given.PixelRepresentation, given.SamplesPerPixel = 15, 0, 1
    given.PhotometricInterpretation = "MONOCHROME2"
    given.PixelData = bytes(range(256)) * 4096  # 1 MiB
    given.file_meta.MediaStorageSOPClassUID = given.SOPClassUID
    path = tmp_path / "sc.dcm"
    given.save_as(path, enforce_file_format=True)

    lazy = dcmread(path, defer_size=1024)
    assert referenced_uids(lazy) == {"2.25.1", "2.25.2", "2.25.3", "9.9.9.1", "9.9.9.2"}
    assert isinstance(lazy._dict[0x7FE00010], RawDataElement)  # matching read no pixels
    out = reidentify(lazy, ORIGINALS, UIDS, _new_uid, PROVENANCE, NOW).dataset
    assert isinstance(out._dict[0x7FE00010], RawDataElement)  # never read into memory
    assert out.StudyInstanceUID == "1.2.3.4.100"
    written = tmp_path / "out.dcm"
    dcmwrite(written, out, enforce_file_format=True)
    again = dcmread(written)
    assert again.PixelData == given.PixelData and again.PatientID == "PID-REAL-1"
