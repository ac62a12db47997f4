"""The synthetic corpus (tests/corpus.py) is what it claims to be.

These tests guard the test data of the de-identification tests: if a planted
attribute or token went missing, a PHI test could pass without proving
anything. DCMTK (dcmcjpeg) and dicom3tools (dciodvfy) are required; a
missing tool is a failure, never a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import config, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.corpus import (  # noqa: E402
    PATIENT_A,
    PATIENT_B,
    PLANT_PRIVATE_CREATOR,
    UNPLANTABLE,
    Corpus,
    jpeg_compress,
    make_ct_series,
    make_planted_corpus,
    make_valid_study,
    table_rows,
)

PLANTED_KINDS = {"ct", "mr", "enhanced_ct", "sr", "rtstruct", "pdf", "gsps", "jpeg_ct", "ct_b"}
VALID_KINDS = {"ct_a1_0", "ct_a1_1", "ct_a1_2", "ct_a2_0", "ct_b1_0", "mr_a1",
               "enhanced_ct_a1", "sr_a1", "rtstruct_a1", "gsps_a1", "pdf_a1", "sc_a1",
               "jpeg_ct_a1"}
PATIENT_A_KINDS = PLANTED_KINDS - {"ct_b"}
UNIQUE_TOKEN = re.compile(r"PHI\d{5}E[0-9A-F]{4}")

#: dciodvfy "Error" lines accepted per valid kind (none: every kind is error-free).
ACCEPTED_DCIODVFY_ERRORS: dict[str, set[str]] = {}


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    assert path is not None, f"{tool} not found: install Debian package {package}"
    return path


def _generate(make: object, root: Path) -> Corpus:
    """Generate with pydicom's validation raising, as strict tests may configure it."""
    saved = (config.settings.writing_validation_mode, config.settings.reading_validation_mode)
    config.settings.writing_validation_mode = config.RAISE
    config.settings.reading_validation_mode = config.RAISE
    try:
        result = make(root)  # type: ignore[operator]
    finally:
        (config.settings.writing_validation_mode,
         config.settings.reading_validation_mode) = saved
    assert isinstance(result, Corpus)
    return result


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    _require("dcmcjpeg", "dcmtk")
    return _generate(make_planted_corpus, tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    _require("dcmcjpeg", "dcmtk")
    return _generate(make_valid_study, tmp_path_factory.mktemp("valid"))


def _read(path: Path) -> FileDataset:
    return dcmread(path)


def _elements(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def _all_bytes(c: Corpus) -> list[bytes]:
    return [path.read_bytes() for path in c.files.values()]


# -- the tools ---------------------------------------------------------------


def test_dcmtk_is_installed() -> None:
    _require("dcmcjpeg", "dcmtk")
    _require("dcmdump", "dcmtk")


def test_dicom3tools_is_installed() -> None:
    _require("dciodvfy", "dicom3tools")


def test_jpeg_compress_without_dcmcjpeg_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="install Debian package dcmtk"):
        jpeg_compress(tmp_path / "in.dcm", tmp_path / "out.dcm")


# -- both corpora --------------------------------------------------------------


def test_kinds_are_complete_and_read_back(planted: Corpus, valid: Corpus) -> None:
    assert set(planted.files) == PLANTED_KINDS
    assert set(valid.files) == VALID_KINDS
    for c in (planted, valid):
        for kind, path in c.files.items():
            assert path.parent == c.root
            ds = _read(path)
            assert "SOPInstanceUID" in ds, kind
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, kind


def test_every_token_is_in_some_input_file(planted: Corpus, valid: Corpus) -> None:
    for c in (planted, valid):
        blobs = _all_bytes(c)
        missing = sorted(t for t in c.tokens if not any(t.encode("ascii") in b for b in blobs))
        assert not missing, f"tokens not planted anywhere: {missing[:10]}"


def test_patients_and_studies(planted: Corpus, valid: Corpus) -> None:
    assert valid.patients == {"A": PATIENT_A, "B": PATIENT_B}
    assert set(valid.studies) == {"A1", "A2", "B1"}
    assert set(planted.studies) == {"A1", "B1"}
    by_study: dict[str, set[str]] = {}
    for kind, path in valid.files.items():
        ds = _read(path)
        by_study.setdefault(ds.StudyInstanceUID, set()).add(str(ds.PatientID))
        assert ds.StudyInstanceUID in valid.studies.values(), kind
    assert by_study[valid.studies["A1"]] == {PATIENT_A.patient_id}
    assert by_study[valid.studies["A2"]] == {PATIENT_A.patient_id}
    assert by_study[valid.studies["B1"]] == {PATIENT_B.patient_id}
    for kind, path in planted.files.items():
        ds = _read(path)
        patient = PATIENT_B if kind == "ct_b" else PATIENT_A
        assert ds.PatientID == patient.patient_id, kind
        assert ds.StudyInstanceUID == planted.studies["B1" if kind == "ct_b" else "A1"]
    for c in (planted, valid):
        assert {PATIENT_A.family, PATIENT_A.given, PATIENT_A.patient_id,
                PATIENT_B.family, PATIENT_B.patient_id} <= c.tokens
        assert set(c.studies.values()) <= c.tokens


def test_pixel_data_never_contains_a_token(planted: Corpus, valid: Corpus) -> None:
    for c in (planted, valid):
        for kind, path in c.files.items():
            ds = _read(path)
            if "PixelData" not in ds:
                continue
            pixels = ds.PixelData
            leaked = [t for t in c.tokens if t.encode("ascii") in pixels]
            assert not leaked, f"{kind}: pixel data contains {leaked[:3]}"


def test_jpeg_files_have_a_compressed_transfer_syntax(planted: Corpus, valid: Corpus) -> None:
    for path in (planted.files["jpeg_ct"], valid.files["jpeg_ct_a1"]):
        ds = _read(path)
        assert ds.file_meta.TransferSyntaxUID.startswith("1.2.840.10008.1.2.4.")
        assert ds.file_meta.TransferSyntaxUID.is_compressed
        assert ds["PixelData"].is_undefined_length
    original = _read(valid.files["ct_a1_0"])
    compressed = _read(valid.files["jpeg_ct_a1"])
    assert compressed.SOPInstanceUID == original.SOPInstanceUID  # lossless: same instance


def test_generation_is_deterministic(planted: Corpus, valid: Corpus, tmp_path: Path) -> None:
    for make, first in ((make_planted_corpus, planted), (make_valid_study, valid)):
        again = make(tmp_path / first.root.name)
        assert again.tokens == first.tokens
        assert again.studies == first.studies
        assert set(again.files) == set(first.files)
        for kind, path in first.files.items():
            assert again.files[kind].read_bytes() == path.read_bytes(), kind
        assert sorted(p.name for p in again.root.iterdir()) == sorted(
            p.name for p in first.root.iterdir())


def test_seed_selects_the_uids(tmp_path: Path) -> None:
    a = make_ct_series(tmp_path / "s0", 1, rows=16, columns=16, seed=0)
    b = make_ct_series(tmp_path / "s1", 1, rows=16, columns=16, seed=1)
    assert _read(a[0]).StudyInstanceUID != _read(b[0]).StudyInstanceUID


# -- the planted corpus ----------------------------------------------------------


def test_every_table_attribute_is_planted(planted: Corpus) -> None:
    rows = table_rows()
    assert len(rows) == 621
    plantable = {r.keyword for r in rows if r.keyword} - set(UNPLANTABLE)
    assert set(UNPLANTABLE) == {r.keyword for r in rows if r.tag.startswith("(0000,")}
    seen_anywhere: set[str] = set()
    for kind in sorted(PATIENT_A_KINDS):
        ds = _read(planted.files[kind])
        present = {e.keyword for e in _elements(ds)} | {e.keyword for e in ds.file_meta}
        seen_anywhere |= present
        missing = sorted(plantable - present)
        assert not missing, f"{kind} lacks table attributes {missing[:10]}"
        for tag in (0x60000010, 0x60000011, 0x60000040, 0x60000050, 0x60000100,
                    0x60000102, 0x60003000, 0x60004000, 0x50000022, 0x50003000):
            assert tag in ds, f"{kind} lacks ({tag >> 16:04X},{tag & 0xFFFF:04X})"
        overlay = ds[0x60003000].value
        assert len(overlay) * 8 >= ds[0x60000010].value * ds[0x60000011].value
    assert plantable <= seen_anywhere


def test_table_rows_resolve_default_options() -> None:
    by_keyword = {r.keyword: r for r in table_rows() if r.keyword}
    assert by_keyword["StudyDate"].action == "C"  # Z overridden by retain modified dates
    assert by_keyword["StudyDescription"].action == "C"  # X overridden by clean descriptors
    assert by_keyword["ContentSequence"].action == "C"  # D overridden by clean structured
    assert by_keyword["PatientName"].action == "Z"


def test_planted_values_follow_the_rules(planted: Corpus) -> None:
    rows = {r.keyword: r for r in table_rows() if r.keyword}
    clean_text_vrs = {"SH", "LO", "ST", "LT", "UT", "UC", "CS"}
    identifiers = PATIENT_A.tokens()
    ds = _read(planted.files["ct"])
    for elem in ds:
        row = rows.get(elem.keyword)
        if row is None or elem.VR == "SQ" or elem.keyword == "TimezoneOffsetFromUTC":
            continue
        text = str(elem.value)
        if elem.VR in ("DA", "TM", "DT", "UI"):
            assert text in planted.tokens, elem.keyword
        elif row.action == "C" and elem.VR in clean_text_vrs:
            # C keeps the value minus the instance's own identifiers: no unique tokens
            assert not UNIQUE_TOKEN.search(text), elem.keyword
            assert any(i in text for i in identifiers), elem.keyword
        elif elem.VR in ("AE", "SH", "LO", "ST", "LT", "UT", "UC", "PN", "UR"):
            assert any(t in text for t in planted.tokens), elem.keyword
    assert str(ds.StudyDate).startswith("1951")
    assert PATIENT_A.family in ds.StudyDescription
    assert PATIENT_A.patient_id in ds.ImageComments


def test_unique_tokens_are_not_substrings_of_each_other(planted: Corpus) -> None:
    tokens = sorted(planted.tokens)
    clashes = [(a, b) for a in tokens for b in tokens if a != b and a in b]
    assert not clashes, clashes[:5]
    assert sum(1 for t in tokens if UNIQUE_TOKEN.fullmatch(t)) > 300


def test_planted_dates_and_times_sit_in_their_windows(planted: Corpus) -> None:
    dates = {t for t in planted.tokens if re.fullmatch(r"\d{8}", t)}
    times = {t for t in planted.tokens if re.fullmatch(r"\d{6}\.\d{6}", t)}
    stamps = {t for t in planted.tokens if re.fullmatch(r"\d{14}\.\d{6}", t)}
    births = {PATIENT_A.birth_date, PATIENT_B.birth_date}
    assert len(dates - births) >= 55 and len(times) >= 53 and len(stamps) >= 57
    assert all("19510301" <= d <= "19510731" for d in dates - births)
    assert all("101500" <= t[:6] <= "102000" for t in times)
    assert all(s.startswith("1951") and "143200" <= s[8:14] <= "143800" for s in stamps)


def test_private_blocks_preamble_and_file_meta_carry_tokens(planted: Corpus) -> None:
    for kind, path in planted.files.items():
        ds = _read(path)
        assert ds.preamble is not None and ds.preamble.startswith(b"PHIPREAMBLE"), kind
        assert ds.preamble[11:].rstrip(b"\0").decode() in planted.tokens
        for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                        "PrivateInformationCreatorUID"):
            assert ds.file_meta[keyword].value in planted.tokens, (kind, keyword)
        assert ds.file_meta.PrivateInformation.rstrip(b"\0").decode() in planted.tokens
        for group in (0x0009, 0x0029):
            block = ds.private_block(group, PLANT_PRIVATE_CREATOR)
            assert block[0x10].value in planted.tokens
            assert block[0x12].VR == "UN"
    ds = _read(planted.files["ct"])
    outer = ds.private_block(0x0009, PLANT_PRIVATE_CREATOR)[0x20]
    assert outer.VR == "SQ"
    inner = outer.value[0].private_block(0x0009, PLANT_PRIVATE_CREATOR)[0x21]
    assert inner.VR == "SQ"
    assert str(inner.value[0].PatientName) in planted.tokens


def test_table_sequences_hold_identifiers_three_levels_deep(planted: Corpus) -> None:
    ds = _read(planted.files["ct"])
    for keyword in ("RequestAttributesSequence", "ReferencedPatientSequence",
                    "ContentSequence", "IconImageSequence"):
        item = ds[keyword].value[0]
        deep = item.OtherPatientIDsSequence[0]
        assert deep.PatientID in planted.tokens
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        assert any(i in meaning for i in PATIENT_A.tokens()), keyword
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == _read(
        planted.files["mr"]).SOPInstanceUID


def test_kept_sequences_hold_identifiers_three_levels_deep(planted: Corpus) -> None:
    identifiers = PATIENT_A.tokens()
    for kind in sorted(PATIENT_A_KINDS):
        ds = _read(planted.files[kind])
        modifier = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
        assert any(i in modifier.CodeMeaning for i in identifiers), kind
    enhanced = _read(planted.files["enhanced_ct"])
    assert enhanced.NumberOfFrames == 3
    anatomy = enhanced.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert any(i in anatomy.AnatomicRegionSequence[0].CodeMeaning for i in identifiers)
    frame = enhanced.PerFrameFunctionalGroupsSequence[2].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime in planted.tokens
    sr = _read(planted.files["sr"])
    findings = sr.ContentSequence[1].ContentSequence
    text = next(i for i in findings if i.ValueType == "TEXT")
    assert PATIENT_A.family in text.TextValue and not UNIQUE_TOKEN.search(text.TextValue)


def test_patient_b_is_separate(planted: Corpus) -> None:
    b_only = PATIENT_B.tokens((PATIENT_B.accession_numbers[0],)) - PATIENT_A.tokens()
    a_only = PATIENT_A.tokens((PATIENT_A.accession_numbers[0],)) - PATIENT_B.tokens()
    ct_b = planted.files["ct_b"].read_bytes()
    assert all(t.encode() in ct_b for t in b_only)
    assert not any(t.encode() in ct_b for t in a_only)
    for kind in PATIENT_A_KINDS:
        data = planted.files[kind].read_bytes()
        assert not any(t.encode() in data for t in b_only), kind


def test_pdf_contains_the_patient_name(planted: Corpus, valid: Corpus) -> None:
    for path in (planted.files["pdf"], valid.files["pdf_a1"]):
        ds = _read(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
        document = ds.EncapsulatedDocument
        assert document.startswith(b"%PDF-") and b"%%EOF" in document
        assert f"{PATIENT_A.given} {PATIENT_A.family}".encode() in document


# -- the valid study ---------------------------------------------------------------


def test_rtstruct_references_existing_ct_slices(valid: Corpus) -> None:
    cts = [_read(valid.files[f"ct_a1_{i}"]) for i in range(3)]
    ct_uids = {str(ct.SOPInstanceUID) for ct in cts}
    rt = _read(valid.files["rtstruct_a1"])
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == cts[0].FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == cts[0].SeriesInstanceUID
    listed = {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence}
    assert listed == ct_uids
    for roi in rt.ROIContourSequence:
        for contour in roi.ContourSequence:
            for ref in contour.ContourImageSequence:
                assert ref.ReferencedSOPInstanceUID in ct_uids
    assert rt.RTROIObservationsSequence[0].ReferencedROINumber == rt.StructureSetROISequence[
        0].ROINumber


def test_valid_references_hold_together(valid: Corpus) -> None:
    cts = [_read(valid.files[f"ct_a1_{i}"]) for i in range(3)]
    ct_uids = {str(ct.SOPInstanceUID) for ct in cts}
    assert len({ct.SeriesInstanceUID for ct in cts}) == 1
    assert len({ct.FrameOfReferenceUID for ct in cts}) == 1
    sr = _read(valid.files["sr_a1"])
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {str(r.ReferencedSOPInstanceUID) for r in evidence.ReferencedSOPSequence} == ct_uids
    findings = sr.ContentSequence[1]
    assert findings.ValueType == "CONTAINER"
    types = {item.ValueType for item in findings.ContentSequence}
    assert {"TEXT", "PNAME", "DATE", "CODE", "IMAGE"} <= types
    image = next(i for i in findings.ContentSequence if i.ValueType == "IMAGE")
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in ct_uids
    gsps = _read(valid.files["gsps_a1"])
    refs = gsps.ReferencedSeriesSequence[0].ReferencedImageSequence
    assert {str(r.ReferencedSOPInstanceUID) for r in refs} == ct_uids
    text = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert PATIENT_A.family in text
    enhanced = _read(valid.files["enhanced_ct_a1"])
    assert enhanced.NumberOfFrames == 3 and len(enhanced.PerFrameFunctionalGroupsSequence) == 3
    assert "BurnedInAnnotation" not in _read(valid.files["sc_a1"])


def test_valid_study_passes_dciodvfy(valid: Corpus) -> None:
    exe = _require("dciodvfy", "dicom3tools")
    for kind, path in sorted(valid.files.items()):
        proc = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
        lines = (proc.stdout + proc.stderr).splitlines()
        errors = {line.strip() for line in lines if line.startswith("Error")}
        unexpected = errors - ACCEPTED_DCIODVFY_ERRORS.get(kind, set())
        assert not unexpected, f"{kind}: {sorted(unexpected)}"


# -- the benchmark series ------------------------------------------------------------


def test_ct_series_is_one_16_bit_series(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path, 3, rows=32, columns=32)
    slices = [_read(p) for p in paths]
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert len({s.SOPInstanceUID for s in slices}) == 3
    for s in slices:
        assert s.BitsAllocated == 16 and s.Rows == 32 and s.Columns == 32
        assert len(s.PixelData) == 32 * 32 * 2
        assert s.PatientID == PATIENT_A.patient_id
        assert len(s) >= 90
    assert slices[0].PixelData != slices[1].PixelData
