"""The header check of a received C-STORE dataset (gateway.receive.check_received, PS3.4 B.2.3).

Each case is a Part 10 file as pynetdicom writes a received dataset (preamble,
File Meta Information, then the dataset as received), and the verdict the
node answers with: None (accept), 0xA700, 0xA900 or 0xC000 with its comment.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.receive import Verdict, check_received

CT = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SOP = "1.2.826.0.1.3680043.8.498.1234567890"
MB = 1024 * 1024


def _file(tmp_path: Path, ds: Dataset, *, cut: int = 0, tail: bytes = b"",
          implicit: bool = False) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = SOP
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue() + tail
    path = tmp_path / "received.dcm"
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


def _ct(*, pixels: int = 64 * 1024, last: str | None = None, sop_class: str = CT) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = SOP
    ds.PatientID = "PID-1"
    ds.StudyDescription = "HEAD"
    ds.Rows, ds.Columns = 128, 256  # 64 KB of 16-bit pixels
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if pixels:
        ds.add_new(0x7FE00010, "OW", b"\x01\x02" * (pixels // 2))
    if last is not None:  # a small text element after everything else
        ds.add_new(0x00991000, "LO", "PRIVATE")
        ds.add_new(0x00990010, "LO", last)
    return ds


def _check(path: Path, sop_class: str = CT, sop: str = SOP, max_mb: int = 64) -> Verdict | None:
    return check_received(path, sop_class, sop, max_mb * MB)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_a_whole_dataset_is_accepted(tmp_path: Path, implicit: bool) -> None:
    assert _check(_file(tmp_path, _ct(), implicit=implicit)) is None
    # a small text element last (an image always ends with its Pixel Data: a report here)
    report = _ct(pixels=0, last="END", sop_class=BASIC_TEXT_SR)
    assert _check(_file(tmp_path, report, implicit=implicit), sop_class=BASIC_TEXT_SR) is None


@pytest.mark.parametrize("cut", [1, 1000, 40 * 1024])
def test_pixel_data_cut_short_is_truncated(tmp_path: Path, cut: int) -> None:
    assert _check(_file(tmp_path, _ct(), cut=cut)) == Verdict(0xC000, "dataset is truncated")


def test_a_small_last_value_cut_short_is_truncated(tmp_path: Path) -> None:
    path = _file(tmp_path, _ct(pixels=0, last="SOME TEXT VALUE"), cut=3)
    assert _check(path) == Verdict(0xC000, "dataset is truncated")


def test_an_empty_dataset_is_truncated(tmp_path: Path) -> None:
    assert _check(_file(tmp_path, Dataset())) == Verdict(0xC000, "dataset is truncated")


def test_a_value_length_past_the_end_is_truncated(tmp_path: Path) -> None:
    # (0099,1001) OB with a 32-bit length of 0xFFFFFFF0 and four bytes of value
    tail = struct.pack("<HH2sHI", 0x0099, 0x1001, b"OB", 0, 0xFFFFFFF0) + b"abcd"
    path = _file(tmp_path, _ct(pixels=0), tail=tail)
    assert _check(path) == Verdict(0xC000, "dataset is truncated")


def test_an_element_header_cut_in_its_length_cannot_be_parsed(tmp_path: Path) -> None:
    tail = struct.pack("<HH2sH", 0x0099, 0x1001, b"OB", 0) + b"\x10\x00"  # two of four bytes
    path = _file(tmp_path, _ct(pixels=0), tail=tail)
    assert _check(path) == Verdict(0xC000, "dataset cannot be parsed")


def test_a_missing_sop_instance_uid_does_not_match(tmp_path: Path) -> None:
    ds = _ct()
    del ds.SOPInstanceUID
    assert _check(_file(tmp_path, ds)) == Verdict(0xA900, "SOP Class or Instance UID missing")


def test_a_dataset_without_either_uid_does_not_match(tmp_path: Path) -> None:
    ds = Dataset()
    ds.PatientID = "PID-1"
    assert _check(_file(tmp_path, ds)) == Verdict(0xA900, "SOP Class or Instance UID missing")


def test_a_malformed_uid_does_not_match(tmp_path: Path) -> None:
    path = _file(tmp_path, _ct())
    data = path.read_bytes()
    malformed = SOP.replace(".1234567890", ".0234567890")  # a leading zero (PS3.5 9.1)
    at = data.rindex(SOP.encode())  # the dataset's, after the File Meta's
    path.write_bytes(data[:at] + malformed.encode() + data[at + len(SOP):])
    verdict = _check(path, sop=malformed)
    assert verdict == Verdict(0xA900, "SOP Class or Instance UID malformed")


def test_uids_other_than_the_request_do_not_match(tmp_path: Path) -> None:
    path = _file(tmp_path, _ct())
    assert _check(path, sop_class="1.2.840.10008.5.1.4.1.1.4") == Verdict(
        0xA900, "SOP Class UID differs from the request")
    assert _check(path, sop=SOP + ".1") == Verdict(
        0xA900, "SOP Instance UID differs from the request")


def test_a_dataset_over_the_size_limit_is_out_of_resources(tmp_path: Path) -> None:
    path = _file(tmp_path, _ct(pixels=2 * MB))
    assert _check(path, max_mb=1) == Verdict(0xA700, "dataset exceeds the size limit")
