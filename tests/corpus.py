"""Synthetic DICOM corpus for the de-identification tests.

Everything here is fake: the patients, their identifiers, the hospital and
the physicians are invented, and every "PHI" string is planted on purpose so
that a test can prove it does not survive de-identification.

Two corpora are built:

* :func:`make_valid_study` -- objects that are valid for their IOD (checked
  with ``dciodvfy`` by ``tests/unit/test_corpus.py``) carrying realistic fake
  PHI: patient A with two studies, patient B with one.
* :func:`make_planted_corpus` -- adversarial objects in which every attribute
  of PS3.15 Table E.1-1 that a stored object can carry holds a planted value,
  plus private blocks, overlay and curve groups, sequences nested three deep,
  a PHI-bearing preamble and File Meta Information.

Both are deterministic for a given seed: UIDs are name-based (UUID version 5
in the ``2.25.`` form, or a fixed root plus a counter) and no value depends
on the clock.
:attr:`Corpus.tokens` lists every planted string that must not be found in
the de-identified output.

:func:`make_ct_series` makes plain 16-bit CT slices for benchmarks and
:func:`jpeg_compress` wraps DCMTK's ``dcmcjpeg``.
"""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

__all__ = [
    "CT_IMAGE",
    "COMPREHENSIVE_SR",
    "DEFAULT_OPTIONS",
    "ENCAPSULATED_PDF",
    "ENHANCED_CT_IMAGE",
    "GSPS",
    "MR_IMAGE",
    "PATIENT_A",
    "PATIENT_B",
    "PLANT_PRIVATE_CREATOR",
    "PLANT_UID_ROOT",
    "RT_STRUCTURE_SET",
    "SECONDARY_CAPTURE",
    "TABLE_PATH",
    "UNPLANTABLE",
    "Corpus",
    "PatientPHI",
    "TableRow",
    "jpeg_compress",
    "make_ct_series",
    "make_planted_corpus",
    "make_valid_study",
    "table_rows",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The package copy of PS3.15 Table E.1-1 (read only).
TABLE_PATH = REPO_ROOT / "anonymizer" / "_standard" / "ps315_e1_1.csv"

#: Profile options whose columns override the Basic Profile by default.
DEFAULT_OPTIONS: tuple[str, ...] = (
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
)

#: Table rows (by keyword) that no stored object can carry, with the reason.
UNPLANTABLE: dict[str, str] = {
    "AffectedSOPInstanceUID": "command element (group 0000): not allowed in a stored data set",
    "RequestedSOPInstanceUID": "command element (group 0000): not allowed in a stored data set",
}

#: Private creator of the planted private blocks.
PLANT_PRIVATE_CREATOR = "FAKEVENDOR PHI 1.0"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"

_MANUFACTURER = "ACME IMAGING"
_MODEL = "SIMULATOR 3000"
_SOFTWARE = "1.0.0"


# --------------------------------------------------------------------------
# The fake people
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientPHI:
    """The fake identity of one patient and the people and places around them.

    Attributes
    ----------
    patient_id : str
        PatientID.
    issuer : str
        IssuerOfPatientID.
    family, given : str
        Components of PatientName.
    birth_date : str
        PatientBirthDate, ``YYYYMMDD``.
    address : str
        PatientAddress.
    phone : str
        PatientTelephoneNumbers.
    sex : str
        PatientSex (not PHI by itself, not a token).
    other_patient_id : str
        OtherPatientIDs.
    mother_birth_name : str
        PatientMotherBirthName, PN form ``FAMILY^GIVEN``.
    institution : str
        InstitutionName.
    institution_address : str
        InstitutionAddress.
    referring_physician : str
        ReferringPhysicianName, PN form ``FAMILY^GIVEN``.
    performing_physician : str
        PerformingPhysicianName, PN form.
    operator : str
        OperatorsName, PN form.
    accession_numbers : tuple of str
        AccessionNumber of each of the patient's studies, in study order.
    """

    patient_id: str
    issuer: str
    family: str
    given: str
    birth_date: str
    address: str
    phone: str
    sex: str
    other_patient_id: str
    mother_birth_name: str
    institution: str
    institution_address: str
    referring_physician: str
    performing_physician: str
    operator: str
    accession_numbers: tuple[str, ...]

    @property
    def name(self) -> str:
        """PatientName in PN form, ``FAMILY^GIVEN``."""
        return f"{self.family}^{self.given}"

    def tokens(self, accessions: tuple[str, ...] | None = None) -> frozenset[str]:
        """Every string of this identity that must not survive de-identification.

        Parameters
        ----------
        accessions : tuple of str, optional
            The accession numbers actually used; all of them by default.
        """
        people = (self.mother_birth_name, self.referring_physician,
                  self.performing_physician, self.operator)
        parts = {p for person in people for p in person.split("^") if p}
        used = self.accession_numbers if accessions is None else accessions
        return frozenset({
            self.patient_id, self.issuer, self.family, self.given, self.birth_date,
            self.address, self.phone, self.other_patient_id, self.institution,
            self.institution_address, *used, *parts,
        })


PATIENT_A = PatientPHI(
    patient_id="PID-A-771903",
    issuer="ISSUERFAKE-A",
    family="DOEFAKE",
    given="JANEPHI",
    birth_date="19480912",
    address="1428 ELMFAKE STREET, SPRINGFAKE ZZ 99901",
    phone="555-0100-7719",
    sex="F",
    other_patient_id="OPID-A-550127",
    mother_birth_name="MAIDENFAKE^ROSEPHI",
    institution="FAKE GENERAL HOSPITAL",
    institution_address="1 INFIRMARYFAKE ROAD, SPRINGFAKE ZZ 99900",
    referring_physician="HOUSEFAKE^GREGPHI",
    performing_physician="CURIEFAKE^MARIEPHI",
    operator="TECHFAKE^TOMPHI",
    accession_numbers=("ACC-A1-40417", "ACC-A2-40522"),
)

PATIENT_B = PatientPHI(
    patient_id="PID-B-338120",
    issuer="ISSUERFAKE-B",
    family="ROEFAKE",
    given="JOHNPHI",
    birth_date="19620227",
    address="77 OAKFAKE AVENUE, RIVERFAKE ZZ 99902",
    phone="555-0100-3381",
    sex="M",
    other_patient_id="OPID-B-660391",
    mother_birth_name="SMITHFAKE^ANNAPHI",
    institution="FAKE GENERAL HOSPITAL",
    institution_address="1 INFIRMARYFAKE ROAD, SPRINGFAKE ZZ 99900",
    referring_physician="WILSONFAKE^JAMESPHI",
    performing_physician="LISTERFAKE^JOSEPHPHI",
    operator="RADFAKE^RITAPHI",
    accession_numbers=("ACC-B1-51234",),
)


@dataclass(frozen=True)
class Corpus:
    """A generated corpus and what was planted in it.

    Attributes
    ----------
    root : Path
        Directory holding the files.
    files : dict of str to Path
        Kind of object -> file.
    tokens : frozenset of str
        Every planted PHI string (ASCII) that must not survive
        de-identification: identifiers, unique tokens, remapped UIDs, dates,
        times and date-times.
    patients : dict of str to PatientPHI
        ``"A"`` and ``"B"``.
    studies : dict of str to str
        Study label (``"A1"``, ``"A2"``, ``"B1"``) -> original StudyInstanceUID.
    """

    root: Path
    files: dict[str, Path]
    tokens: frozenset[str]
    patients: dict[str, PatientPHI]
    studies: dict[str, str]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dicom-gateway:test-corpus")


def _uid(seed: int, *labels: object) -> str:
    """A deterministic UUID-derived (``2.25.``) UID for ``labels`` under ``seed``.

    ``generate_uid(prefix=None)`` ignores its entropy sources and is random,
    so the name-based UUID (version 5) is used instead.
    """
    name = "/".join([str(seed), *map(str, labels)])
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, name).int}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _pixels(rows: int, columns: int, frame: int = 0) -> bytes:
    """Deterministic 16-bit little-endian CT-like pattern, values 0..3999.

    The high byte of every sample is below 0x10, so no two consecutive bytes
    are printable ASCII: pixel data can never contain a planted token.
    """
    data = array("H", ((x * 37 + y * 101 + frame * 13 + (x * y) % 97) % 4000
                       for y in range(rows) for x in range(columns)))
    return struct.pack(f"<{len(data)}H", *data)


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DGW_TEST_CORPUS"
    return meta


def _save(ds: Dataset, path: Path) -> Path:
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = _file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_compress(src: Path, dst: Path) -> Path:
    """Compress ``src`` to JPEG Lossless SV1 into ``dst`` with DCMTK's ``dcmcjpeg``.

    Parameters
    ----------
    src : Path
        An uncompressed DICOM image file.
    dst : Path
        Output file (overwritten).

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    RuntimeError
        If ``dcmcjpeg`` is not installed or fails.
    """
    exe = shutil.which("dcmcjpeg")
    if exe is None:
        raise RuntimeError(
            "dcmcjpeg not found: install Debian package dcmtk (scripts/test does this)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "+e1", "+un", str(src), str(dst)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not dst.exists():
        raise RuntimeError(f"dcmcjpeg failed on {src.name}: {proc.stderr.strip()}")
    return dst


# --------------------------------------------------------------------------
# PS3.15 Table E.1-1
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """One row of PS3.15 Table E.1-1 with its action under :data:`DEFAULT_OPTIONS`.

    Attributes
    ----------
    tag : str
        As printed in the standard, e.g. ``"(0010,0010)"`` or ``"(60XX,3000)"``.
    keyword : str
        pydicom keyword; empty for the repeating groups and private row.
    name : str
        Attribute name.
    action : str
        The Basic Profile action, overridden by each default option column
        that is not empty.
    """

    tag: str
    keyword: str
    name: str
    action: str

    @property
    def tag_value(self) -> BaseTag | None:
        """The tag as an integer, or None for rows with ``XX`` or private groups."""
        tag = tag_for_keyword(self.keyword) if self.keyword else None
        return None if tag is None else Tag(tag)


_TABLE_CACHE: list[TableRow] = []


def table_rows() -> list[TableRow]:
    """The 621 rows of the package copy of Table E.1-1, resolved for the default options.

    Returns
    -------
    list of TableRow
        In table order.
    """
    if not _TABLE_CACHE:
        with TABLE_PATH.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                action = row["basic_profile"]
                for option in DEFAULT_OPTIONS:
                    if row[option]:
                        action = row[option]
                _TABLE_CACHE.append(TableRow(row["tag"], row["keyword"], row["name"], action))
    return list(_TABLE_CACHE)


# --------------------------------------------------------------------------
# make_valid_study: IOD-valid objects with realistic fake PHI
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Study:
    """One study of the valid corpus."""

    label: str
    phi: PatientPHI
    uid: str
    accession: str
    study_id: str
    date: str
    time: str
    description: str
    seed: int

    def uid_for(self, *labels: object) -> str:
        return _uid(self.seed, "valid", self.label, *labels)


def _age(birth: str, on: str) -> str:
    years = int(on[:4]) - int(birth[:4]) - ((on[4:]) < (birth[4:]))
    return f"{years:03d}Y"


def _clock(base: str, minutes: int, fraction: int) -> str:
    """``base`` (HHMMSS) moved by whole minutes, with a distinct fraction."""
    h, m, s = int(base[:2]), int(base[2:4]), int(base[4:6])
    total = h * 60 + m + minutes
    return f"{total // 60 % 24:02d}{total % 60:02d}{s:02d}.{fraction:06d}"


def _patient_study(ds: Dataset, st: _Study) -> None:
    """Patient, General Study and Patient Study modules."""
    phi = st.phi
    ds.PatientName = phi.name
    ds.PatientID = phi.patient_id
    ds.IssuerOfPatientID = phi.issuer
    ds.PatientBirthDate = phi.birth_date
    ds.PatientSex = phi.sex
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = phi.other_patient_id
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = phi.issuer
    ds.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
    ds.PatientMotherBirthName = phi.mother_birth_name
    ds.StudyInstanceUID = st.uid
    ds.StudyDate = st.date
    ds.StudyTime = st.time
    ds.ReferringPhysicianName = phi.referring_physician
    ds.StudyID = st.study_id
    ds.AccessionNumber = st.accession
    ds.StudyDescription = st.description
    ds.PatientAge = _age(phi.birth_date, st.date)
    ds.PatientSize = "1.68"
    ds.PatientWeight = "64.5"
    ds.PatientAddress = phi.address
    ds.PatientTelephoneNumbers = phi.phone


def _series(ds: Dataset, st: _Study, modality: str, series: str, number: int,
            description: str, minutes: int) -> None:
    """General Series module (plus the modality's series-level attributes)."""
    ds.Modality = modality
    ds.SeriesInstanceUID = st.uid_for("series", series)
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = st.date
    ds.SeriesTime = _clock(st.time[:6], minutes, 100000 + number)
    ds.PerformingPhysicianName = st.phi.performing_physician
    ds.OperatorsName = st.phi.operator
    ds.BodyPartExamined = "CHEST"


def _equipment(ds: Dataset, st: _Study) -> None:
    """General Equipment module."""
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = st.phi.institution
    ds.InstitutionAddress = st.phi.institution_address
    ds.StationName = f"STNFAKE{st.label}"
    ds.ManufacturerModelName = _MODEL
    ds.DeviceSerialNumber = f"SNFAKE-{st.label}-0042"
    ds.SoftwareVersions = _SOFTWARE


def _sop_common(ds: Dataset, st: _Study, sop_class: str, key: str, minutes: int) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = st.uid_for("instance", key)
    ds.InstanceCreationDate = st.date
    ds.InstanceCreationTime = _clock(st.time[:6], minutes, 200000 + minutes)


def _image_pixel(ds: Dataset, rows: int, columns: int, frames: int = 1,
                 pixel_data: bytes | None = None) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if pixel_data is None:
        pixel_data = b"".join(_pixels(rows, columns, f) for f in range(frames))
    ds.PixelData = pixel_data


def _valid_ct(st: _Study, series: str, series_number: int, index: int, frame_of_ref: str,
              *, rows: int = 64, columns: int = 64, pixel_data: bytes | None = None) -> Dataset:
    ds = Dataset()
    minutes = 5 + index
    _sop_common(ds, st, CT_IMAGE, f"ct-{series}-{index}", minutes)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _patient_study(ds, st)
    _series(ds, st, "CT", series, series_number, f"AXIAL 5MM {st.phi.family}", 4)
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PositionReferenceIndicator = ""
    _equipment(ds, st)
    ds.InstanceNumber = index + 1
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], minutes, 300000 + index)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = st.date
    ds.AcquisitionTime = _clock(st.time[:6], 5, 400000 + series_number)
    ds.ImageComments = f"Checked against {st.phi.patient_id} by {st.phi.operator.split('^')[0]}"
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-16, -16, -100 + 5 * index]
    ds.SliceThickness = 5
    ds.SliceLocation = -100 + 5 * index
    _image_pixel(ds, rows, columns, pixel_data=pixel_data)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.ProtocolName = "CHEST ROUTINE"
    return ds


def _valid_mr(st: _Study, frame_of_ref: str) -> Dataset:
    ds = Dataset()
    _sop_common(ds, st, MR_IMAGE, "mr-0", 21)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    _patient_study(ds, st)
    _series(ds, st, "MR", "mr", 2, f"T1 AXIAL {st.phi.given}", 20)
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PositionReferenceIndicator = ""
    _equipment(ds, st)
    ds.InstanceNumber = 1
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], 21, 310001)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = st.date
    ds.AcquisitionTime = _clock(st.time[:6], 21, 410001)
    ds.ImageComments = f"MR for {st.phi.family} {st.phi.patient_id}"
    ds.PixelSpacing = [1, 1]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-32, -32, 0]
    ds.SliceThickness = 5
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 500
    ds.EchoTime = 15
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.ImagedNucleus = "1H"
    _image_pixel(ds, 64, 64)
    return ds


def _enhanced_ct(ds: Dataset, st: _Study, frame_of_ref: str, frames: int,
                 frame_datetime: list[str]) -> None:
    """The Enhanced CT Image modules (without Patient/Study/Equipment)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], 31, 320001)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = frame_datetime[0]
    ds.AcquisitionDuration = 3.0
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionContextSequence = []
    ds.NumberOfFrames = frames
    _image_pixel(ds, 32, 32, frames)

    dim_uid = st.uid_for("dimension-organization")
    ds.DimensionOrganizationType = "3D"
    ds.DimensionOrganizationSequence = [Dataset()]
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_uid
    index = Dataset()
    index.DimensionOrganizationUID = dim_uid
    index.DimensionIndexPointer = Tag("ImagePositionPatient")
    index.FunctionalGroupPointer = Tag("PlanePositionSequence")
    index.DimensionDescriptionLabel = "Slice position"
    ds.DimensionIndexSequence = [index]

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [1, 1]
    measures.SliceThickness = 5
    shared.PixelMeasuresSequence = [measures]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orientation]
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [_code("51185008", "SCT", "Thorax")]
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = [anatomy]
    transform = Dataset()
    transform.RescaleIntercept = -1024
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [transform]
    voi = Dataset()
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    shared.FrameVOILUTSequence = [voi]
    irradiation = Dataset()
    irradiation.IrradiationEventUID = st.uid_for("irradiation")
    shared.IrradiationEventIdentificationSequence = [irradiation]
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    shared.CTImageFrameTypeSequence = [frame_type]
    acq_type = Dataset()
    acq_type.AcquisitionType = "SPIRAL"
    acq_type.ConstantVolumeFlag = "NO"
    acq_type.FluoroscopyFlag = "NO"
    shared.CTAcquisitionTypeSequence = [acq_type]
    details = Dataset()
    details.DataCollectionDiameter = 500
    details.GantryDetectorTilt = 0
    details.TableHeight = 150
    details.RotationDirection = "CW"
    details.RevolutionTime = 0.5
    details.SingleCollimationWidth = 0.625
    details.TotalCollimationWidth = 40
    shared.CTAcquisitionDetailsSequence = [details]
    dynamics = Dataset()
    dynamics.TableSpeed = 80
    dynamics.TableFeedPerRotation = 40
    dynamics.SpiralPitchFactor = 1
    shared.CTTableDynamicsSequence = [dynamics]
    geometry = Dataset()
    geometry.DistanceSourceToDetector = 1040
    geometry.DistanceSourceToDataCollectionCenter = 570
    shared.CTGeometrySequence = [geometry]
    recon = Dataset()
    recon.ReconstructionAlgorithm = "FILTER_BACK_PROJ"
    recon.ConvolutionKernel = "STANDARD"
    recon.ConvolutionKernelGroup = "SOFT_TISSUE"
    recon.ReconstructionDiameter = 32
    recon.ReconstructionPixelSpacing = [1, 1]
    recon.ReconstructionAngle = 360
    recon.ImageFilter = "NONE"
    shared.CTReconstructionSequence = [recon]
    exposure = Dataset()
    exposure.ExposureTimeInms = 500
    exposure.XRayTubeCurrentInmA = 200
    exposure.ExposureInmAs = 100
    exposure.ExposureModulationType = "NONE"
    exposure.CTDIvol = 8.5
    exposure.CTDIPhantomTypeCodeSequence = [
        _code("113691", "DCM", "IEC Body Dosimetry Phantom")]
    shared.CTExposureSequence = [exposure]
    xray = Dataset()
    xray.KVP = 120
    xray.FocalSpots = [0.7]
    xray.FilterType = "FLAT"
    xray.FilterMaterial = "ALUMINUM"
    shared.CTXRayDetailsSequence = [xray]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for f in range(frames):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = 1
        content.FrameReferenceDateTime = frame_datetime[f]
        content.FrameAcquisitionDateTime = frame_datetime[f]
        content.FrameAcquisitionDuration = 1000.0
        content.DimensionIndexValues = [f + 1]
        content.FrameComments = f"frame {f + 1} of {st.phi.family}"
        item.FrameContentSequence = [content]
        position = Dataset()
        position.ImagePositionPatient = [-16, -16, -100 + 5 * f]
        item.PlanePositionSequence = [position]
        ct_position = Dataset()
        ct_position.TablePosition = -100 + 5 * f
        ct_position.ReconstructionTargetCenterPatient = [0, 0, -100 + 5 * f]
        ct_position.DataCollectionCenterPatient = [0, 0, -100 + 5 * f]
        item.CTPositionSequence = [ct_position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame


def _valid_enhanced_ct(st: _Study, frame_of_ref: str) -> Dataset:
    ds = Dataset()
    _sop_common(ds, st, ENHANCED_CT_IMAGE, "enhanced-ct-0", 31)
    _patient_study(ds, st)
    _series(ds, st, "CT", "enhanced-ct", 3, f"ENHANCED CT FOR {st.phi.family}", 30)
    ds.PatientPosition = "HFS"
    _equipment(ds, st)
    base = _clock(st.time[:6], 30, 0)[:6]
    stamps = [f"{st.date}{base}.{500001 + f:06d}" for f in range(3)]
    _enhanced_ct(ds, st, frame_of_ref, 3, stamps)
    return ds


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _content_item(relationship: str, value_type: str, concept: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    return item


def _valid_sr(st: _Study, cts: list[Dataset]) -> Dataset:
    phi = st.phi
    ds = Dataset()
    _sop_common(ds, st, COMPREHENSIVE_SR, "sr-0", 41)
    _patient_study(ds, st)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = st.uid_for("series", "sr")
    ds.SeriesNumber = 40
    ds.SeriesDescription = f"REPORT {phi.family}"
    ds.ReferencedPerformedProcedureStepSequence = []
    _equipment(ds, st)
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], 41, 330001)
    observer = Dataset()
    observer.VerifyingObserverName = phi.referring_physician
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = phi.institution
    observer.VerificationDateTime = f"{st.date}{_clock(st.time[:6], 45, 600001)}"
    ds.VerifyingObserverSequence = [observer]
    ds.PerformedProcedureCodeSequence = []
    evidence = Dataset()
    evidence.StudyInstanceUID = st.uid
    series = Dataset()
    series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    series.ReferencedSOPSequence = [_ref(CT_IMAGE, ct.SOPInstanceUID) for ct in cts]
    evidence.ReferencedSeriesSequence = [series]
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    observer_name = _content_item("HAS OBS CONTEXT", "PNAME",
                                  _code("121008", "DCM", "Person Observer Name"))
    observer_name.PersonName = phi.referring_physician
    text = _content_item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"))
    text.TextValue = (f"Small nodule in {phi.given} {phi.family} ({phi.patient_id}), "
                      f"accession {st.accession}, born {phi.birth_date}.")
    pname = _content_item("CONTAINS", "PNAME", _code("121008", "DCM", "Person Observer Name"))
    pname.PersonName = phi.performing_physician
    when = _content_item("CONTAINS", "DATE", _code("111060", "DCM", "Study Date"))
    when.Date = st.date
    code = _content_item("CONTAINS", "CODE", _code("121071", "DCM", "Finding"))
    code.ConceptCodeSequence = [_code("27925004", "SCT", "Nodule")]
    image = _content_item("CONTAINS", "IMAGE", _code("121112", "DCM", "Source of Measurement"))
    image.ReferencedSOPSequence = [_ref(CT_IMAGE, cts[0].SOPInstanceUID)]
    findings = _content_item("CONTAINS", "CONTAINER", _code("121070", "DCM", "Findings"))
    findings.ContinuityOfContent = "SEPARATE"
    findings.ContentSequence = [text, pname, when, code, image]
    ds.ContentSequence = [observer_name, findings]
    return ds


def _valid_rtstruct(st: _Study, cts: list[Dataset]) -> Dataset:
    phi = st.phi
    ds = Dataset()
    _sop_common(ds, st, RT_STRUCTURE_SET, "rtstruct-0", 51)
    _patient_study(ds, st)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = st.uid_for("series", "rtstruct")
    ds.SeriesNumber = 50
    ds.SeriesDescription = f"CONTOURS {phi.family}"
    ds.OperatorsName = phi.operator
    _equipment(ds, st)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = f"{phi.family} ROIS"
    ds.StructureSetName = f"Contours for {phi.given} {phi.family}"
    ds.StructureSetDate = st.date
    ds.StructureSetTime = _clock(st.time[:6], 51, 340001)
    frame_of_ref = cts[0].FrameOfReferenceUID
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PositionReferenceIndicator = ""
    series = Dataset()
    series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    series.ContourImageSequence = [_ref(CT_IMAGE, ct.SOPInstanceUID) for ct in cts]
    study = _ref("1.2.840.10008.3.1.2.3.1", st.uid)
    study.RTReferencedSeriesSequence = [series]
    for_item = Dataset()
    for_item.FrameOfReferenceUID = frame_of_ref
    for_item.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [for_item]
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = frame_of_ref
    roi.ROIName = f"NODULE {phi.family}"
    roi.ROIDescription = f"Nodule of {phi.given} {phi.family}"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = [roi]
    z = float(cts[1].ImagePositionPatient[2])
    contour = Dataset()
    contour.ContourImageSequence = [_ref(CT_IMAGE, cts[1].SOPInstanceUID)]
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 4
    contour.ContourData = [-4, -4, z, 4, -4, z, 4, 4, z, -4, 4, z]
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = [contour]
    ds.ROIContourSequence = [roi_contour]
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = phi.performing_physician
    ds.RTROIObservationsSequence = [observation]
    return ds


def _valid_gsps(st: _Study, cts: list[Dataset]) -> Dataset:
    phi = st.phi
    ds = Dataset()
    _sop_common(ds, st, GSPS, "gsps-0", 61)
    _patient_study(ds, st)
    ds.Modality = "PR"
    ds.SeriesInstanceUID = st.uid_for("series", "gsps")
    ds.SeriesNumber = 60
    ds.SeriesDescription = f"ANNOTATIONS {phi.family}"
    ds.BodyPartExamined = "CHEST"
    _equipment(ds, st)
    ds.InstanceNumber = 1
    ds.ContentLabel = "ANNOTATION"
    ds.ContentDescription = f"Arrow for {phi.family}"
    ds.PresentationCreationDate = st.date
    ds.PresentationCreationTime = _clock(st.time[:6], 61, 350001)
    ds.ContentCreatorName = phi.referring_physician
    series = Dataset()
    series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    series.ReferencedImageSequence = [_ref(CT_IMAGE, ct.SOPInstanceUID) for ct in cts]
    ds.ReferencedSeriesSequence = [series]
    area = Dataset()
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [int(cts[0].Columns), int(cts[0].Rows)]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelSpacing = [0.5, 0.5]
    ds.DisplayedAreaSelectionSequence = [area]
    text = Dataset()
    text.UnformattedTextValue = f"{phi.family} nodule"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [20.0, 20.0]
    text.AnchorPointVisibility = "Y"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [annotation]
    layer = Dataset()
    layer.GraphicLayer = "LAYER1"
    layer.GraphicLayerOrder = 1
    ds.GraphicLayerSequence = [layer]
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    voi = Dataset()
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    ds.SoftcopyVOILUTSequence = [voi]
    return ds


def _pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF showing ``lines`` in Helvetica."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        ops.append(f"({esc(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)


def _set_document(ds: Dataset, pdf: bytes) -> None:
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")


def _valid_pdf(st: _Study) -> Dataset:
    phi = st.phi
    ds = Dataset()
    _sop_common(ds, st, ENCAPSULATED_PDF, "pdf-0", 71)
    _patient_study(ds, st)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = st.uid_for("series", "pdf")
    ds.SeriesNumber = 70
    _equipment(ds, st)
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], 71, 360001)
    ds.AcquisitionDateTime = f"{st.date}{_clock(st.time[:6], 70, 610001)}"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"Referral letter for {phi.family}"
    ds.ConceptNameCodeSequence = []
    _set_document(ds, _pdf([
        f"Referral letter - {phi.institution}",
        f"Patient: {phi.given} {phi.family}  ID {phi.patient_id}",
        f"Born {phi.birth_date}, {phi.address}",
        f"Accession {st.accession}, referring {phi.referring_physician.replace('^', ' ')}",
    ]))
    return ds


def _valid_sc(st: _Study) -> Dataset:
    ds = Dataset()
    _sop_common(ds, st, SECONDARY_CAPTURE, "sc-0", 81)
    _patient_study(ds, st)
    ds.Modality = "OT"
    ds.SeriesInstanceUID = st.uid_for("series", "sc")
    ds.SeriesNumber = 80
    ds.SeriesDescription = f"SCREENSHOT {st.phi.family}"
    ds.BodyPartExamined = "CHEST"
    _equipment(ds, st)
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = st.date
    ds.ContentTime = _clock(st.time[:6], 81, 370001)
    ds.DateOfSecondaryCapture = st.date
    ds.TimeOfSecondaryCapture = _clock(st.time[:6], 81, 380001)
    ds.ImageComments = f"Screen capture, {st.phi.patient_id}"
    _image_pixel(ds, 64, 64)
    return ds


def _walk(ds: Dataset) -> Iterator[Any]:
    """Every data element of ``ds`` at every depth (sequence items included)."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _values(elem: Any) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if str(v)]
    return [str(value)]


def _structural_tokens(datasets: list[Dataset]) -> set[str]:
    """Remapped UIDs and planted dates/times found in ``datasets``."""
    table = {row.keyword for row in table_rows() if row.keyword}
    found: set[str] = set()
    for ds in datasets:
        for elem in _walk(ds):
            if elem.VR == "UI":
                found.update(v for v in _values(elem) if not v.startswith("1.2.840.10008."))
            elif elem.VR in ("DA", "TM", "DT") and elem.keyword in table:
                found.update(_values(elem))
    return found


def make_valid_study(root: Path, *, seed: int = 0) -> Corpus:
    """Write IOD-valid objects with realistic fake PHI under ``root``.

    Patient A has studies A1 (CT series of three slices, MR, Enhanced CT,
    Comprehensive SR, RT Structure Set, GSPS, Encapsulated PDF, Secondary
    Capture without BurnedInAnnotation, and a JPEG Lossless copy of the first
    CT slice) and A2 (one CT); patient B has study B1 (one CT).

    Parameters
    ----------
    root : Path
        Output directory (created if missing).
    seed : int, optional
        Selects the UIDs; the same seed gives byte-identical files.

    Returns
    -------
    Corpus
        Files by kind: ``ct_a1_0`` .. ``ct_a1_2``, ``ct_a2_0``, ``ct_b1_0``,
        ``mr_a1``, ``enhanced_ct_a1``, ``sr_a1``, ``rtstruct_a1``,
        ``gsps_a1``, ``pdf_a1``, ``sc_a1``, ``jpeg_ct_a1``.

    Raises
    ------
    RuntimeError
        If ``dcmcjpeg`` is not installed.
    """
    root = Path(root)
    a, b = PATIENT_A, PATIENT_B
    studies = {
        "A1": _Study("A1", a, _uid(seed, "valid", "study", "A1"), a.accession_numbers[0],
                     "SIDFAKE-A1", "20240311", "093012.250000",
                     f"CT CHEST FOR {a.family}", seed),
        "A2": _Study("A2", a, _uid(seed, "valid", "study", "A2"), a.accession_numbers[1],
                     "SIDFAKE-A2", "20240902", "141005.500000",
                     f"CT FOLLOW-UP {a.family} {a.given}", seed),
        "B1": _Study("B1", b, _uid(seed, "valid", "study", "B1"), b.accession_numbers[0],
                     "SIDFAKE-B1", "20240520", "101544.750000",
                     f"CT CHEST FOR {b.family}", seed),
    }
    a1, a2, b1 = studies["A1"], studies["A2"], studies["B1"]
    datasets: dict[str, Dataset] = {}
    ct_for = a1.uid_for("frame-of-reference", "ct")
    cts = [_valid_ct(a1, "ct", 1, i, ct_for) for i in range(3)]
    for i, ct in enumerate(cts):
        datasets[f"ct_a1_{i}"] = ct
    datasets["ct_a2_0"] = _valid_ct(a2, "ct", 1, 0, a2.uid_for("frame-of-reference", "ct"))
    datasets["ct_b1_0"] = _valid_ct(b1, "ct", 1, 0, b1.uid_for("frame-of-reference", "ct"))
    datasets["mr_a1"] = _valid_mr(a1, a1.uid_for("frame-of-reference", "mr"))
    datasets["enhanced_ct_a1"] = _valid_enhanced_ct(a1, ct_for)
    datasets["sr_a1"] = _valid_sr(a1, cts)
    datasets["rtstruct_a1"] = _valid_rtstruct(a1, cts)
    datasets["gsps_a1"] = _valid_gsps(a1, cts)
    datasets["pdf_a1"] = _valid_pdf(a1)
    datasets["sc_a1"] = _valid_sc(a1)

    files = {kind: _save(ds, root / f"{kind}.dcm") for kind, ds in datasets.items()}
    files["jpeg_ct_a1"] = jpeg_compress(files["ct_a1_0"], root / "jpeg_ct_a1.dcm")

    tokens = set(a.tokens() | b.tokens())
    tokens |= _structural_tokens(list(datasets.values()))
    for st in studies.values():
        tokens |= {st.study_id, f"STNFAKE{st.label}", f"SNFAKE-{st.label}-0042"}
    return Corpus(root=root, files=files, tokens=frozenset(tokens),
                  patients={"A": a, "B": b},
                  studies={label: st.uid for label, st in studies.items()})


# --------------------------------------------------------------------------
# make_planted_corpus: every table attribute planted
# --------------------------------------------------------------------------

#: Root of the planted (non-well-known) UIDs; a fixed-width counter follows.
PLANT_UID_ROOT = "1.2.826.0.1.3680043.10.999."

_TEXT_MAX = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240,
             "UT": 65536, "UC": 65536}
_INTEGER_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
_BINARY_VRS = {"OB", "OW", "UN", "OD", "OF", "OL", "OV"}
_DA_START = date(1951, 3, 1)
_DT_START = date(1951, 8, 1)

_Path = tuple[tuple[str, int], ...]

#: Table sequences whose planted item also references an image.
_REFERENCES = frozenset({"ReferencedImageSequence", "SourceImageSequence"})


class _Planter:
    """Chooses, remembers and records the planted value of each attribute.

    A value is remembered by patient and by its path from the top level
    (keyword and item index at each level), so every object of a patient
    carries the same value at the same place, and the same value is never
    planted for two different places.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.tokens: set[str] = set()
        self.rows = {row.keyword: row for row in table_rows() if row.keyword}
        self._memo: dict[tuple[str, _Path], Any] = {}
        self._count = {"text": 0, "uid": 0, "da": 0, "tm": 0, "dt": 0, "ds": 0, "clean": 0}
        self.label = ""
        self.phi = PATIENT_A
        self.accession = ""
        self.identity: dict[str, Any] = {}

    def patient(self, label: str, phi: PatientPHI, accession: str) -> None:
        """Plant for ``phi`` from now on."""
        self.label, self.phi, self.accession = label, phi, accession
        self.identity = {
            "PatientName": phi.name, "PatientID": phi.patient_id,
            "IssuerOfPatientID": phi.issuer, "PatientBirthDate": phi.birth_date,
            "PatientSex": phi.sex, "PatientAge": _age(phi.birth_date, "20240311"),
            "PatientAddress": phi.address, "PatientTelephoneNumbers": phi.phone,
            "OtherPatientIDs": phi.other_patient_id,
            "PatientMotherBirthName": phi.mother_birth_name, "AccessionNumber": accession,
            "InstitutionName": phi.institution, "InstitutionAddress": phi.institution_address,
            "ReferringPhysicianName": phi.referring_physician,
            "PerformingPhysicianName": phi.performing_physician,
            "OperatorsName": phi.operator,
            "StudyDescription": f"CT CHEST FOR {phi.family} {phi.given}",
            "ImageComments": f"Checked against {phi.patient_id}, {phi.family}",
        }

    # -- value makers ------------------------------------------------------

    def _next(self, kind: str) -> int:
        self._count[kind] += 1
        return self._count[kind]

    def _keep(self, value: str) -> str:
        self.tokens.add(value)
        return value

    def text_token(self, tag: int) -> str:
        """``PHI`` + 5 digits + ``E`` + the element number: unique, valid for every text VR."""
        return self._keep(f"PHI{self._next('text'):05d}E{tag & 0xFFFF:04X}")

    def uid(self) -> str:
        return self._keep(f"{PLANT_UID_ROOT}{self.seed}.{10000 + self._next('uid')}")

    def date(self) -> str:
        n = self._next("da") - 1
        if n >= (_DT_START - _DA_START).days:
            raise RuntimeError("too many planted dates for the DA window")
        return self._keep((_DA_START + timedelta(days=n)).strftime("%Y%m%d"))

    def time(self) -> str:
        n = self._next("tm") - 1
        seconds = 10 * 3600 + 15 * 60 + n
        return self._keep(f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
                          f".{100000 + n:06d}")

    def datetime(self) -> str:
        n = self._next("dt") - 1
        seconds = 14 * 3600 + 32 * 60 + n
        day = (_DT_START + timedelta(days=n)).strftime("%Y%m%d")
        return self._keep(f"{day}{seconds // 3600:02d}{seconds // 60 % 60:02d}"
                          f"{seconds % 60:02d}.{200000 + n:06d}")

    def decimal(self) -> str:
        return self._keep(f"98765.{4000 + self._next('ds')}")

    def clean_text(self, maxlen: int) -> str:
        """Neutral words mixed with the patient's own identifiers (for action C)."""
        p, acc = self.phi, self.accession
        ref_family, ref_given = p.referring_physician.split("^")
        n = self._next("clean")
        long = (f"Study of {p.given} {p.family} (id {p.patient_id}, accession {acc}), "
                f"born {p.birth_date}, seen at {p.institution}, referred by "
                f"{ref_given} {ref_family}.")
        if len(long) <= maxlen:
            return long
        if maxlen >= 64:
            choices = [f"study of {p.given} {p.family}, id {p.patient_id}",
                       f"{p.family}^{p.given} accession {acc}",
                       f"born {p.birth_date} at {p.institution}",
                       f"referred by {ref_given} {ref_family} for {p.family}",
                       f"{p.institution} patient {p.patient_id}"]
        else:
            choices = [f"of {p.family}", f"{p.given} plan", f"id {p.patient_id}",
                       f"acc {acc}", f"by {ref_family}"]
        text = choices[n % len(choices)]
        assert len(text) <= maxlen, text
        return text

    def make(self, keyword: str, path: _Path, *, top: bool) -> Any:
        """The planted value for table attribute ``keyword`` at ``path`` (remembered)."""
        key = (self.label, path)
        if key not in self._memo:
            self._memo[key] = self._make(keyword, path, top=top)
        return self._memo[key]

    def _make(self, keyword: str, path: _Path, *, top: bool) -> Any:
        if keyword == "TimezoneOffsetFromUTC":
            return "+0100"
        if top and keyword in self.identity:
            return self.identity[keyword]
        tag = tag_for_keyword(keyword)
        assert tag is not None
        vr = dictionary_VR(tag)
        action = self.rows[keyword].action
        if vr == "DA":
            return self.date()
        if vr == "TM":
            return self.time()
        if vr == "DT":
            return self.datetime()
        if vr == "UI":
            return self.uid()
        if vr in _BINARY_VRS:
            text = self.clean_text(64) if action == "C" else self.text_token(tag)
            raw = text.encode("ascii")
            return raw + b" " * (len(raw) % 2)
        if vr == "DS":
            count = {"LensSpecification": 4}.get(keyword, 3 if keyword.endswith(
                ("Latitude", "Longitude")) else 1)
            return [self.decimal()] + ["1.5"] * (count - 1)
        if vr == "IS":
            return self._keep("876543210")
        if vr == "AS":
            return "047Y"
        if vr in _INTEGER_VRS:
            return 1
        if vr in ("FL", "FD"):
            return 1.0
        if vr == "UR":
            return f"https://phi.invalid/{self.text_token(tag)}"
        if vr == "CS":
            return f"COERCE {self.phi.family}" if action == "C" else self.text_token(tag)
        if vr in _TEXT_MAX:
            if action == "C" and vr != "PN":
                return self.clean_text(_TEXT_MAX[vr])
            return self.text_token(tag)
        raise AssertionError(f"no planting rule for {keyword} ({vr})")

    # -- planting ------------------------------------------------------------

    def item(self, path: _Path, refer_to: str | None) -> Dataset:
        """One sequence item, three levels deep, for a table sequence at ``path``."""
        item = Dataset()
        if refer_to is not None:
            item.ReferencedSOPClassUID = CT_IMAGE
            item.ReferencedSOPInstanceUID = refer_to
        item.ConceptNameCodeSequence = [
            _code("99001", "99FAKE", self.clean_code((*path, ("ConceptNameCodeSequence", 0))))]
        item.PersonName = self.make("PersonName", (*path, ("PersonName", 0)), top=False)
        other = Dataset()
        inner = (*path, ("OtherPatientIDsSequence", 0))
        other.PatientID = self.make("PatientID", (*inner, ("PatientID", 0)), top=False)
        other.IssuerOfPatientID = self.make("IssuerOfPatientID",
                                            (*inner, ("IssuerOfPatientID", 0)), top=False)
        other.TypeOfPatientID = "TEXT"
        item.OtherPatientIDsSequence = [other]
        return item

    def plant(self, ds: Dataset, *, keep: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None, refer_to: str | None = None,
              path: _Path = ()) -> None:
        """Replace the values of the table attributes in ``ds``, at every depth.

        Existing UIDs are kept (they hold the objects together), and so is
        every keyword in ``keep``; sequences are descended into. At the top
        level every table attribute that is missing (or only those in
        ``only``) is added with its planted value.
        """
        top = not path
        for elem in list(ds):
            keyword = elem.keyword
            if elem.tag.is_private or not keyword:
                continue
            here = (*path, (keyword, 0))
            if elem.VR == "SQ":
                if not elem.value and keyword in self.rows and keyword not in keep:
                    elem.value = [self.item(here, refer_to if keyword in _REFERENCES else None)]
                    continue
                for index, child in enumerate(elem.value):
                    self.plant(child, keep=keep, refer_to=refer_to,
                               path=(*path, (keyword, index)))
                continue
            if keyword not in self.rows or keyword in keep or elem.VR == "UI":
                continue
            ds[elem.tag].value = self.make(keyword, here, top=top)
        if not top:
            return
        for keyword, row in self.rows.items():
            if keyword in ds or keyword in UNPLANTABLE or keyword in keep:
                continue
            if only is not None and keyword not in only:
                continue
            tag = row.tag_value
            if tag is None or tag.group in (0x0000, 0x0002):
                continue
            vr = dictionary_VR(tag)
            here = ((keyword, 0),)
            if vr == "SQ":
                value: Any = [self.item(here, refer_to if keyword in _REFERENCES else None)]
            else:
                value = self.make(keyword, here, top=True)
            ds.add_new(tag, vr, value)

    def remember(self, path: _Path, factory: Any) -> Any:
        """The value ``factory()`` made the first time ``path`` was asked for."""
        key = (self.label, path)
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]

    def clean_code(self, path: _Path) -> str:
        """CodeMeaning made of identifiers, for a kept (non-table) sequence."""
        value: str = self.remember(path, lambda: self.clean_text(64))
        return value

    def token_bytes(self, path: _Path, tag: int, size: int = 0) -> bytes:
        """An ASCII token as bytes, zero-padded to ``size`` and to even length."""
        def make() -> bytes:
            raw = self.text_token(tag).encode("ascii")
            raw += b"\0" * max(0, size - len(raw))
            return raw + b"\0" * (len(raw) % 2)
        value: bytes = self.remember(path, make)
        return value

    def token(self, path: _Path, tag: int) -> str:
        value: str = self.remember(path, lambda: self.text_token(tag))
        return value


def _plant_private(ds: Dataset, pl: _Planter, *, nested: bool = True) -> None:
    """Private blocks in groups 0009 and 0029, a nested private sequence, an orphan."""
    for group in (0x0009, 0x0029):
        block = ds.private_block(group, PLANT_PRIVATE_CREATOR, create=True)
        base = (("#private", group),)
        block.add_new(0x10, "LO", pl.token((*base, ("LO", 0)), block.get_tag(0x10)))
        block.add_new(0x11, "LT", pl.token((*base, ("LT", 0)), block.get_tag(0x11)))
        block.add_new(0x12, "UN", pl.token_bytes((*base, ("UN", 0)), block.get_tag(0x12)))
        if not nested or group != 0x0009:
            continue
        deepest = Dataset()
        inner_block = deepest.private_block(group, PLANT_PRIVATE_CREATOR, create=True)
        inner_block.add_new(0x10, "LO", pl.token((*base, ("SQ2", 0), ("LO", 0)),
                                                 inner_block.get_tag(0x10)))
        deepest.PatientName = pl.token((*base, ("SQ2", 0), ("PatientName", 0)), 0x00100010)
        middle = Dataset()
        middle_block = middle.private_block(group, PLANT_PRIVATE_CREATOR, create=True)
        middle_block.add_new(0x10, "LO", pl.token((*base, ("SQ1", 0), ("LO", 0)),
                                                  middle_block.get_tag(0x10)))
        middle_block.add_new(0x21, "SQ", [deepest])
        middle.PatientID = pl.token((*base, ("SQ1", 0), ("PatientID", 0)), 0x00100020)
        block.add_new(0x20, "SQ", [middle])


def _plant_overlay_curve(ds: Dataset, pl: _Planter) -> None:
    """Overlay group 6000 and curve group 5000 (the table's 60xx and 50xx rows)."""
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000022, "LO", "Annotation")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", pl.token_bytes((("#overlay", 0x3000),), 0x60003000, 16))
    ds.add_new(0x60004000, "LT", pl.token((("#overlay", 0x4000),), 0x60004000))
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50000010, "US", 4)
    ds.add_new(0x50000020, "CS", "TAC")
    ds.add_new(0x50000022, "LO", pl.token((("#curve", 0x0022),), 0x50000022))
    ds.add_new(0x50000030, "SH", "SEC")
    ds.add_new(0x50000103, "US", 0)
    ds.add_new(0x50003000, "OB", pl.token_bytes((("#curve", 0x3000),), 0x50003000))


def _plant_kept_sequences(ds: Dataset, pl: _Planter, refer: tuple[str, str]) -> None:
    """Identifiers three levels deep inside sequences the profile keeps."""
    modifier = _code("99002", "99FAKE", pl.clean_code((("#modifier", 0),)))
    region = _code("51185008", "SCT", pl.clean_code((("#region", 0),)))
    region.AnatomicRegionModifierSequence = [modifier]
    ds.AnatomicRegionSequence = [region]
    if "ReferencedSeriesSequence" in ds:
        return
    instance = _ref(CT_IMAGE, refer[1])
    instance.PurposeOfReferenceCodeSequence = [
        _code("121311", "DCM", pl.clean_code((("#purpose", 0),)))]
    series = Dataset()
    series.SeriesInstanceUID = refer[0]
    series.ReferencedInstanceSequence = [instance]
    ds.ReferencedSeriesSequence = [series]


def _plant_file(ds: Dataset, pl: _Planter) -> None:
    """A PHI-bearing preamble and File Meta Information."""
    token = pl.token((("#preamble", 0),), 0x0080)
    ds.preamble = (b"PHIPREAMBLE" + token.encode("ascii")).ljust(128, b"\0")
    meta = _file_meta(ds)
    meta.SourceApplicationEntityTitle = pl.token((("#meta", 0x16),), 0x00020016)
    meta.SendingApplicationEntityTitle = pl.token((("#meta", 0x17),), 0x00020017)
    meta.ReceivingApplicationEntityTitle = pl.token((("#meta", 0x18),), 0x00020018)
    meta.PrivateInformationCreatorUID = pl.remember((("#meta", 0x100),), pl.uid)
    meta.PrivateInformation = pl.token_bytes((("#meta", 0x102),), 0x00020102)
    ds.file_meta = meta


#: What patient B's CT carries besides its base attributes ("fewer plants").
_B_ONLY = frozenset({
    "OtherPatientIDs", "OtherPatientNames", "PatientBirthTime", "PatientComments",
    "AdditionalPatientHistory", "MedicalAlerts", "Occupation", "RequestingPhysician",
    "ReasonForStudy", "StudyComments", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepDescription",
    "AcquisitionDateTime", "DerivationDescription", "RequestAttributesSequence",
    "ReferencedStudySequence", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "InstitutionalDepartmentName", "ContentCreatorName",
})


def _planted_sr(st: _Study, cts: list[Dataset], pl: _Planter) -> Dataset:
    ds = _valid_sr(st, cts)
    findings = ds.ContentSequence[1]
    extra = []
    for value_type, keyword, placeholder in (("DATETIME", "DateTime", "20000101"),
                                             ("TIME", "Time", "000000"),
                                             ("UIDREF", "UID", pl.uid())):
        item = _content_item("CONTAINS", value_type, _code("121071", "DCM", "Finding"))
        setattr(item, keyword, placeholder)
        extra.append(item)
    findings.ContentSequence.extend(extra)
    return ds


def _planted_rtstruct(st: _Study, cts: list[Dataset]) -> Dataset:
    ds = _valid_rtstruct(st, cts)
    roi = ds.StructureSetROISequence[0]
    roi.ROIGenerationDescription = "x"
    roi.ROIDateTime = "20000101"
    observation = ds.RTROIObservationsSequence[0]
    observation.ROIObservationLabel = "x"
    observation.ROIObservationDescription = "x"
    observation.ROIObservationDateTime = "20000101"
    return ds


def _planted_pdf(st: _Study, pl: _Planter) -> Dataset:
    ds = _valid_pdf(st)
    phi = st.phi
    token = pl.token((("#pdf", 0),), 0x00420011)
    _set_document(ds, _pdf([
        f"Referral letter - {phi.institution}",
        f"Patient: {phi.given} {phi.family}  ID {phi.patient_id}  MRN {phi.other_patient_id}",
        f"Born {phi.birth_date}, {phi.address}, phone {phi.phone}",
        f"Accession {st.accession}, referring {phi.referring_physician.replace('^', ' ')}",
        f"Reference {token}",
    ]))
    return ds


def _planted_enhanced_ct(st: _Study, frame_of_ref: str, pl: _Planter) -> Dataset:
    ds = _valid_enhanced_ct(st, frame_of_ref)
    anatomy = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    anatomy.AnatomicRegionSequence[0].CodeMeaning = pl.clean_code(
        (("SharedFunctionalGroupsSequence", 0), ("FrameAnatomySequence", 0),
         ("AnatomicRegionSequence", 0)))
    return ds


def make_planted_corpus(root: Path, *, seed: int = 0) -> Corpus:
    """Write the adversarial corpus under ``root``.

    Every attribute of PS3.15 Table E.1-1 that a stored object can carry
    (all but :data:`UNPLANTABLE`) holds a planted value in each of patient
    A's objects: a unique ``PHI.....`` token for text, a distinct date, time
    or date-time inside narrow windows (1951-03-01 onwards for DA, 10:15:00
    onwards for TM, 1951-08-01 14:32:00 onwards for DT, each with a distinct
    fraction), a distinct UID under :data:`PLANT_UID_ROOT`, and, for the
    attributes whose default action is C, text made of the patient's own
    identifiers mixed with neutral words. Sequences of the table get an item
    with identifiers three levels deep; kept sequences, private blocks
    (creator :data:`PLANT_PRIVATE_CREATOR`), overlay group 6000, curve group
    5000, the preamble and File Meta Information carry tokens too. Pixel
    data is a numeric pattern that cannot contain a token.

    Parameters
    ----------
    root : Path
        Output directory (created if missing).
    seed : int, optional
        Selects the UIDs; the same seed gives byte-identical files.

    Returns
    -------
    Corpus
        Files by kind: ``ct``, ``mr``, ``enhanced_ct``, ``sr``, ``rtstruct``,
        ``pdf``, ``gsps``, ``jpeg_ct`` (JPEG Lossless, made with dcmcjpeg),
        all patient A study A1, and ``ct_b`` (patient B, study B1, fewer
        plants).

    Raises
    ------
    RuntimeError
        If ``dcmcjpeg`` is not installed or fails.
    """
    root = Path(root)
    a, b = PATIENT_A, PATIENT_B
    st_a = _Study("A1", a, _uid(seed, "planted", "study", "A1"), a.accession_numbers[0],
                  "SIDFAKE-A1", "20240311", "093012.250000", "", seed)
    st_b = _Study("B1", b, _uid(seed, "planted", "study", "B1"), b.accession_numbers[0],
                  "SIDFAKE-B1", "20240520", "101544.750000", "", seed)
    pl = _Planter(seed)
    pl.patient("A", a, st_a.accession)

    ct_for = st_a.uid_for("frame-of-reference", "ct")
    ct = _valid_ct(st_a, "ct", 1, 0, ct_for)
    jpeg_src = _valid_ct(st_a, "ct", 1, 1, ct_for)
    mr = _valid_mr(st_a, st_a.uid_for("frame-of-reference", "mr"))
    to_ct = (ct.SeriesInstanceUID, ct.SOPInstanceUID)
    to_mr = (mr.SeriesInstanceUID, mr.SOPInstanceUID)
    cts = [ct, jpeg_src]
    kinds: dict[str, tuple[Dataset, frozenset[str], tuple[str, str]]] = {
        "ct": (ct, frozenset(), to_mr),
        "mr": (mr, frozenset(), to_ct),
        "enhanced_ct": (_planted_enhanced_ct(st_a, ct_for, pl), frozenset(), to_ct),
        "sr": (_planted_sr(st_a, cts, pl), frozenset(), to_ct),
        "rtstruct": (_planted_rtstruct(st_a, cts), frozenset(), to_ct),
        "pdf": (_planted_pdf(st_a, pl), frozenset({"EncapsulatedDocument"}), to_ct),
        "gsps": (_valid_gsps(st_a, cts), frozenset(), to_ct),
        "jpeg_ct": (jpeg_src, frozenset(), to_mr),
    }
    datasets: dict[str, Dataset] = {}
    for kind, (ds, keep, refer) in kinds.items():
        pl.plant(ds, keep=keep, refer_to=refer[1])
        _plant_kept_sequences(ds, pl, refer)
        _plant_private(ds, pl)
        _plant_overlay_curve(ds, pl)
        _plant_file(ds, pl)
        datasets[kind] = ds

    pl.patient("B", b, st_b.accession)
    ct_b = _valid_ct(st_b, "ct", 1, 0, st_b.uid_for("frame-of-reference", "ct"))
    pl.plant(ct_b, only=_B_ONLY)
    _plant_private(ct_b, pl, nested=False)
    _plant_file(ct_b, pl)
    datasets["ct_b"] = ct_b

    files: dict[str, Path] = {}
    for kind, ds in datasets.items():
        if kind == "jpeg_ct":
            source = _save(ds, root / "jpeg_ct.uncompressed.tmp")
            try:
                files[kind] = jpeg_compress(source, root / "jpeg_ct.dcm")
            finally:
                source.unlink()
        else:
            files[kind] = _save(ds, root / f"{kind}.dcm")

    tokens = pl.tokens | _structural_tokens(list(datasets.values()))
    tokens |= a.tokens((st_a.accession,)) | b.tokens((st_b.accession,))
    return Corpus(root=root, files=files, tokens=frozenset(tokens),
                  patients={"A": a, "B": b}, studies={"A1": st_a.uid, "B1": st_b.uid})


# --------------------------------------------------------------------------
# make_ct_series: benchmark input
# --------------------------------------------------------------------------


def _bench_header(ds: Dataset, st: _Study, index: int) -> None:
    """Acquisition, request and device attributes a scanner typically writes."""
    phi = st.phi
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.OtherPatientNames = phi.mother_birth_name
    ds.PatientComments = f"Allergic to contrast; contact {phi.phone}"
    ds.AdditionalPatientHistory = f"Smoker, follow-up for {phi.family}"
    ds.RequestedProcedureDescription = "CT CHEST WITH CONTRAST"
    ds.PerformedProcedureStepDescription = "CT CHEST WITH CONTRAST"
    ds.PerformedProcedureStepID = "PPSFAKE-0001"
    ds.PerformedProcedureStepStartDate = st.date
    ds.PerformedProcedureStepStartTime = _clock(st.time[:6], 2, 700001)
    ds.NameOfPhysiciansReadingStudy = phi.referring_physician
    ds.InstitutionalDepartmentName = "RADIOLOGY FAKE WING"
    ds.ReferencedStudySequence = [_ref("1.2.840.10008.3.1.2.3.1", st.uid)]
    request = Dataset()
    request.RequestedProcedureID = "RPIDFAKE-01"
    request.ScheduledProcedureStepID = "SPSIDFAKE-01"
    request.ScheduledProcedureStepDescription = f"CT CHEST {phi.family}"
    ds.RequestAttributesSequence = [request]
    ds.ContrastBolusAgent = "IOHEXOL"
    ds.ContrastBolusRoute = "IV"
    ds.ScanOptions = "HELICAL MODE"
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = 320
    ds.DistanceSourceToDetector = 1040
    ds.DistanceSourceToPatient = 570
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 150
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 200
    ds.Exposure = 100
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = 24
    ds.FocalSpots = [0.7]
    ds.ConvolutionKernel = "STANDARD"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40
    ds.TableSpeed = 80
    ds.TableFeedPerRotation = 40
    ds.SpiralPitchFactor = 1
    ds.CTDIvol = 8.5
    ds.CTDIPhantomTypeCodeSequence = [_code("113691", "DCM", "IEC Body Dosimetry Phantom")]
    ds.DateOfLastCalibration = st.date
    ds.TimeOfLastCalibration = _clock(st.time[:6], -60, 710001)
    ds.AcquisitionDateTime = f"{st.date}{_clock(st.time[:6], 5, 720000 + index)}"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.PatientIdentityRemoved = "NO"
    ds.SmallestImagePixelValue = 0
    ds.LargestImagePixelValue = 3999
    block = ds.private_block(0x0009, PLANT_PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", f"{phi.family}^{phi.given}")
    block.add_new(0x11, "LO", phi.patient_id)


def make_ct_series(root: Path, count: int, *, rows: int = 512, columns: int = 512,
                   seed: int = 0) -> list[Path]:
    """Write ``count`` 16-bit CT slices of one series (patient A, fake PHI) for benchmarks.

    Each slice has a realistic header of about a hundred elements, including
    identifiers, dates, a request sequence and a private block.

    Parameters
    ----------
    root : Path
        Output directory (created if missing).
    count : int
        Number of slices.
    rows, columns : int, optional
        Matrix size (512 x 512 by default).
    seed : int, optional
        Selects the UIDs; the same seed gives byte-identical files.

    Returns
    -------
    list of Path
        The slices, ``ct_00000.dcm`` onwards, in slice order.
    """
    root = Path(root)
    phi = PATIENT_A
    st = _Study("BENCH", phi, _uid(seed, "bench", "study"), phi.accession_numbers[0],
                "SIDFAKE-BENCH", "20240311", "093012.250000", f"CT CHEST FOR {phi.family}",
                seed)
    frame_of_ref = st.uid_for("frame-of-reference")
    base = _pixels(rows, columns)
    paths = []
    for index in range(count):
        shift = 2 * ((index * 7919) % (rows * columns))
        ds = _valid_ct(st, "bench", 1, index, frame_of_ref, rows=rows, columns=columns,
                       pixel_data=base[shift:] + base[:shift])
        _bench_header(ds, st, index)
        paths.append(_save(ds, root / f"ct_{index:05d}.dcm"))
    return paths


def make_clinic_study(root: Path, *, series: int = 3, per_series: int = 21, rows: int = 64,
                      columns: int = 64, seed: int = 0, jpeg: bool = True) -> Corpus:
    """One study as a clinic sends it: ``series`` CT series of ``per_series`` slices.

    With ``jpeg`` the first slice of the first series is replaced by its JPEG
    Lossless copy (made with DCMTK's dcmcjpeg), so a study carries a
    compressed instance. ``tokens`` holds patient A's planted PHI.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    phi = PATIENT_A
    st = _Study("CLINIC", phi, _uid(seed, "clinic", "study"), phi.accession_numbers[0],
                "SIDFAKE-CLINIC", "20240311", "093012.250000", f"CT CHEST FOR {phi.family}",
                seed)
    frame_of_ref = st.uid_for("frame-of-reference")
    files: dict[str, Path] = {}
    for number in range(1, series + 1):
        for index in range(per_series):
            ds = _valid_ct(st, f"s{number}", number, index, frame_of_ref, rows=rows,
                           columns=columns)
            files[f"s{number}_{index:03d}"] = _save(ds, root / f"s{number}_{index:03d}.dcm")
    if jpeg:
        plain = files["s1_000"]
        compressed = jpeg_compress(plain, root / "s1_000_jpeg.dcm")
        plain.unlink()
        files["s1_000"] = compressed
    return Corpus(root=root, files=files, tokens=phi.tokens(), patients={"A": phi},
                  studies={"CLINIC": st.uid})
