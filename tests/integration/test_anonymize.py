"""`dicom-gateway anonymize` on the planted and the valid corpora.

What must hold: no planted PHI token in any output byte; references between
objects still resolve after UID replacement; patients keep one pseudonym
across studies; the same input and secret give byte-identical output; what
dciodvfy accepted before it accepts after; bad input gets a clear line, a
non-zero exit and leaves nothing half-written.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGLossless, JPEGLosslessSV1

from anonymizer import KeyedPseudonyms
from tests.conftest import TEST_KEY_HEX, require_tool
from tests.corpus import Corpus

Cli = Callable[..., Result]


def _outputs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _leaks(data: bytes, tokens: frozenset[str]) -> list[str]:
    """Tokens found in ``data``; an all-digit token counts only outside a longer digit run
    (a date such as 19510304 can occur by chance inside a 39-digit 2.25 UID)."""
    found = []
    for token in tokens:
        raw = token.encode("latin-1")
        if token.replace(".", "").isdigit():
            if re.search(rb"(?<![0-9.])" + re.escape(raw) + rb"(?![0-9])", data):
                found.append(token)
        elif raw in data:
            found.append(token)
    return found


def _summary(result: Result) -> dict[str, object]:
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def test_no_planted_token_survives_anywhere_in_the_output(
    cli: Cli, planted_corpus: Corpus, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = cli("anonymize", str(planted_corpus.root), str(out), "--recursive", "--json")
    assert result.exit_code == 0, result.output
    summary = _summary(result)
    counts = summary["counts"]
    assert isinstance(counts, dict)
    # every kind is de-identified; the encapsulated PDF is held for review
    assert counts["deidentified"] == len(planted_corpus.files) - 1
    assert counts["needs_review"] == 1 and counts["failed"] == 0
    files = _outputs(out)
    assert len(files) == len(planted_corpus.files) - 1
    for path in files:
        data = path.read_bytes()
        assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
        leaked = _leaks(data, planted_corpus.tokens)
        assert not leaked, f"{path.name} still holds {len(leaked)} planted tokens: {leaked[:5]}"
    classes = {str(dcmread(p).SOPClassUID) for p in files}
    originals = {str(dcmread(p).SOPClassUID) for k, p in planted_corpus.files.items() if k != "pdf"}
    assert classes == originals


def test_compressed_pixel_data_passes_through_byte_for_byte(
    cli: Cli, planted_corpus: Corpus, tmp_path: Path
) -> None:
    source = dcmread(planted_corpus.files["jpeg_ct"])
    assert source.file_meta.TransferSyntaxUID in (JPEGLossless, JPEGLosslessSV1)
    out = tmp_path / "out"
    assert cli("anonymize", str(planted_corpus.files["jpeg_ct"]), str(out)).exit_code == 0
    (path,) = _outputs(out)
    result = dcmread(path)
    assert result.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert result.PixelData == source.PixelData


def test_review_instances_go_only_to_the_review_folder(
    cli: Cli, valid_study: Corpus, tmp_path: Path
) -> None:
    out, review = tmp_path / "out", tmp_path / "review"
    result = cli("anonymize", str(valid_study.root), str(out), "--review-dir", str(review))
    assert result.exit_code == 0, result.output
    held = {str(dcmread(p).SOPClassUID) for p in _outputs(review)}
    assert held == {"1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.7"}
    assert "needs_review: pdf_a1.dcm: " in result.output
    assert "encapsulated document: its content cannot be de-identified" in result.output
    assert "needs_review: sc_a1.dcm: SOP class often carries burned-in text" in result.output
    released = {str(dcmread(p).SOPClassUID) for p in _outputs(out)}
    assert not released & held


def _by_uid(root: Path) -> dict[str, Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in _outputs(root))}


def _references(ds: Dataset) -> set[str]:
    found: set[str] = set()

    def visit(item: Dataset) -> None:
        for elem in item:
            if elem.keyword == "ReferencedSOPInstanceUID":
                found.add(str(elem.value))
            elif isinstance(elem.value, Sequence):
                for child in elem.value:
                    visit(child)

    visit(ds)
    return found


def test_references_resolve_and_patients_keep_one_pseudonym(
    cli: Cli, valid_study: Corpus, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert cli("anonymize", str(valid_study.root), str(out)).exit_code == 0
    instances = _by_uid(out)
    space = KeyedPseudonyms(bytes.fromhex(TEST_KEY_HEX))
    by_kind = {
        kind: instances[space.uid(str(dcmread(path).SOPInstanceUID))]
        for kind, path in valid_study.files.items() if kind not in ("pdf_a1", "sc_a1")
    }
    originals = {str(dcmread(p).SOPInstanceUID) for p in valid_study.files.values()}
    assert not originals & set(instances), "an original SOP Instance UID survived"
    studies = {str(ds.StudyInstanceUID) for ds in instances.values()}
    for kind in ("rtstruct_a1", "gsps_a1", "sr_a1"):
        refs = _references(by_kind[kind])
        assert refs, f"{kind} lost its references"
        assert refs <= set(instances) | studies, f"{kind} references what is not in the output"
    contour_refs = {
        str(img.ReferencedSOPInstanceUID)
        for frame in by_kind["rtstruct_a1"].ReferencedFrameOfReferenceSequence
        for study in frame.RTReferencedStudySequence
        for series in study.RTReferencedSeriesSequence
        for img in series.ContourImageSequence
    }
    ct_a1 = {str(by_kind[f"ct_a1_{i}"].SOPInstanceUID) for i in range(3)}
    assert contour_refs == ct_a1
    frame = by_kind["rtstruct_a1"].ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert frame == by_kind["ct_a1_0"].FrameOfReferenceUID
    # patient A: two studies, one pseudonym; patient B: another one
    a1, a2, b1 = by_kind["ct_a1_0"], by_kind["ct_a2_0"], by_kind["ct_b1_0"]
    assert a1.PatientID == a2.PatientID and a1.PatientName == a2.PatientName
    assert a1.StudyInstanceUID != a2.StudyInstanceUID
    assert b1.PatientID != a1.PatientID and b1.PatientName != a1.PatientName
    assert a1.PatientID != valid_study.patients["A"].patient_id
    assert a1.PatientIdentityRemoved == "YES"
    assert a1.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in a1.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113104", "113105", "113107"]


def test_same_input_and_secret_give_byte_identical_output(
    cli: Cli, planted_corpus: Corpus, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli("anonymize", str(planted_corpus.root), str(first)).exit_code == 0
    assert cli("anonymize", str(planted_corpus.root), str(second)).exit_code == 0
    names = [p.relative_to(first) for p in _outputs(first)]
    assert names == [p.relative_to(second) for p in _outputs(second)] and names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = tmp_path / "other-secret"
    assert cli("anonymize", str(planted_corpus.root), str(other),
               DICOM_GATEWAY_HMAC_KEY="ab" * 32).exit_code == 0
    assert not {p.name for p in _outputs(other)} & {p.name for p in _outputs(first)}


def _dciodvfy_errors(path: Path) -> set[str]:
    run = subprocess.run([require_tool("dciodvfy", "dicom3tools"), str(path)],
                         capture_output=True, text=True, check=False)
    return {line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.interop
def test_dciodvfy_reports_no_new_error(cli: Cli, valid_study: Corpus, tmp_path: Path) -> None:
    out, review = tmp_path / "out", tmp_path / "review"
    assert cli("anonymize", str(valid_study.root), str(out),
               "--review-dir", str(review)).exit_code == 0
    produced = {str(dcmread(p).SOPClassUID) + str(dcmread(p).get("InstanceNumber")): p
                for p in _outputs(out) + _outputs(review)}
    checked = 0
    for kind, source in valid_study.files.items():
        ds = dcmread(source)
        output = produced[str(ds.SOPClassUID) + str(ds.get("InstanceNumber"))]
        new = _dciodvfy_errors(output) - _dciodvfy_errors(source)
        assert not new, f"{kind}: dciodvfy reports new errors: {sorted(new)}"
        checked += 1
    assert checked == len(valid_study.files)


# -- bad input ---------------------------------------------------------------

def _no_partial(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.is_file()], "something was written"


def test_truncated_file_fails_cleanly(cli: Cli, valid_study: Corpus, tmp_path: Path) -> None:
    data = valid_study.files["ct_a1_0"].read_bytes()
    broken = tmp_path / "in" / "truncated.dcm"
    broken.parent.mkdir()
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = cli("anonymize", str(broken), str(out))
    assert result.exit_code == 1
    assert "failed: truncated.dcm: truncated" in result.output
    _no_partial(out)


def test_non_dicom_file_is_skipped_and_counted(cli: Cli, tmp_path: Path) -> None:
    text = tmp_path / "in" / "notes.txt"
    text.parent.mkdir()
    text.write_text("not an image\n")
    out = tmp_path / "out"
    result = cli("anonymize", str(text.parent), str(out), "--json")
    assert result.exit_code == 1  # nothing DICOM was found: nothing produced
    counts = _summary(result)["counts"]
    assert isinstance(counts, dict) and counts["not_dicom"] == 1
    _no_partial(out)


def _tag(group: int, element: int) -> bytes:
    return struct.pack("<HH", group, element)


def _deep_sequence(depth: int) -> bytes:
    """ContentSequence nested ``depth`` times, undefined lengths, as a hostile sender writes it
    (pydicom cannot write such nesting itself)."""
    body = _tag(0x0008, 0x0100) + b"SH" + struct.pack("<H", 2) + b"1 "
    for _ in range(depth):
        item = (_tag(0xFFFE, 0xE000) + struct.pack("<I", 0xFFFFFFFF) + body
                + _tag(0xFFFE, 0xE00D) + struct.pack("<I", 0))
        body = (_tag(0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF) + item
                + _tag(0xFFFE, 0xE0DD) + struct.pack("<I", 0))
    return body


def test_300_deep_sequence_fails_with_the_reason(cli: Cli, tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.543.7"
    ds.PatientID = "DEEP-PATIENT-1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    deep = tmp_path / "in" / "deep.dcm"
    deep.parent.mkdir()
    deep.write_bytes(buffer.getvalue() + _deep_sequence(300))
    out = tmp_path / "out"
    result = cli("anonymize", str(deep), str(out))
    assert result.exit_code == 1
    assert "failed: deep.dcm: sequence nesting deeper than 64" in result.output
    _no_partial(out)


def test_unreadable_folder_is_reported(cli: Cli, valid_study: Corpus, tmp_path: Path) -> None:
    # root reads any folder, so as root the command runs as nobody, from a world-readable place
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="gw-unreadable-")) if as_root else tmp_path
    try:
        base.chmod(0o777)
        source, out = base / "in", base / "out"
        locked = source / "locked"
        locked.mkdir(parents=True)
        shutil.copy(valid_study.files["ct_a1_0"], locked / "image.dcm")
        source.chmod(0o755)
        locked.chmod(0)
        if as_root:
            program = Path(sys.executable).parent / "dicom-gateway"
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       str(program), "anonymize", str(source), str(out), "--recursive"]
            env = {"PATH": os.environ["PATH"], "DICOM_GATEWAY_HMAC_KEY": "5eed" * 16,
                   "DICOM_GATEWAY_STORAGE__DATA_DIR": str(base / "var")}
            run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base,
                                 check=False)
            code, output = run.returncode, run.stdout + run.stderr
        else:
            result = cli("anonymize", str(source), str(out), "--recursive")
            code, output = result.exit_code, result.output
        assert code == 1, output
        assert "failed: locked: folder cannot be read (permission denied)" in output
        assert not out.exists() or not _outputs(out)
    finally:
        (base / "in" / "locked").chmod(0o755)
        if as_root:
            shutil.rmtree(base)
