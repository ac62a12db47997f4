"""The engine's own rules: the residual-PHI gate, review, purity, dummies, UIDs in sequences."""

from __future__ import annotations

import copy
import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from anonymizer import (
    AnonymizationError,
    KeyedPseudonyms,
    Option,
    Profile,
    ResidualPHIError,
    anonymize,
)
from anonymizer.dummies import dummy_value

KEY = b"engine tests secret of 32 bytes."
CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"


def _ct(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.2.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.2.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.2.3"
    ds.PatientName = "GATEFAMILY^GATEGIVEN"
    ds.PatientID = "GATE-ID-4711"
    ds.Modality = "CT"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _through_file(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """Encode and decode, so the engine sees raw elements as it does in production."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def test_gate_fails_an_identifier_in_a_kept_attribute_naming_the_path_not_the_value() -> None:
    item = Dataset()
    item.Manufacturer = "Gatefamily Medical"  # allow-listed, kept as is: the gate must catch it
    source = _through_file(_ct(ReferencedSeriesSequence=Sequence([item])))
    with pytest.raises(ResidualPHIError) as caught:
        anonymize(source, Profile.build(), KeyedPseudonyms(KEY))
    message = str(caught.value)
    assert "(0008,1115) ReferencedSeriesSequence[0].(0008,0070) Manufacturer" in message
    assert "PatientName" in message
    assert "GATEFAMILY" not in message.upper().replace("PATIENTNAME", "")


def test_gate_can_be_turned_off_and_then_lets_the_value_through() -> None:
    source = _through_file(_ct(Manufacturer="GATEFAMILY"))
    result = anonymize(source, Profile.build(residual_phi_gate=False), KeyedPseudonyms(KEY))
    assert result.dataset.Manufacturer == "GATEFAMILY"


@pytest.mark.parametrize(
    ("attrs", "sop_class", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, CT, "BurnedInAnnotation is YES"),
        ({}, US, "SOP class often carries burned-in text"),
        ({"BurnedInAnnotation": "NO", "RecognizableVisualFeatures": "YES"}, CT,
         "RecognizableVisualFeatures is YES"),
    ],
)
def test_risky_objects_need_review(attrs: dict[str, str], sop_class: str, reason: str) -> None:
    source = _through_file(_ct(SOPClassUID=sop_class, **attrs))
    result = anonymize(source, Profile.build(), KeyedPseudonyms(KEY))
    assert any(reason in r for r in result.needs_review), result.needs_review


def test_ultrasound_marked_free_of_burned_in_text_is_released() -> None:
    source = _through_file(_ct(SOPClassUID=US, BurnedInAnnotation="NO"))
    assert anonymize(source, Profile.build(), KeyedPseudonyms(KEY)).needs_review == ()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_the_input_is_never_modified(syntax: str) -> None:
    source = _through_file(_ct(StudyDescription="CT of GATEFAMILY", StudyDate="20200101",
                               StudyTime="101010"), syntax)
    before = copy.deepcopy(source)
    anonymize(source, Profile.build(), KeyedPseudonyms(KEY))
    assert source == before
    assert source.PatientName == "GATEFAMILY^GATEGIVEN"
    assert source.StudyDescription == "CT of GATEFAMILY"


@pytest.mark.parametrize("vr", ["AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN",
                                "SH", "ST", "TM", "UC", "UR", "UT", "FL", "FD", "SL", "SS",
                                "UL", "US", "OB"])
def test_every_dummy_is_valid_for_its_vr(vr: str) -> None:
    from pydicom.dataelem import DataElement

    element = DataElement(0x00091001, vr, dummy_value(vr))  # validation mode raises in tests
    assert element.value not in (None, "", b"")


def test_uids_are_replaced_consistently_inside_nested_sequences_and_well_known_kept() -> None:
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.2.1"  # this very instance
    inner = Dataset()
    inner.ReferencedImageSequence = Sequence([ref])
    outer = Dataset()
    outer.SourceImageSequence = Sequence([inner])
    source = _through_file(_ct(DerivationCodeSequence=Sequence([outer])))
    result = anonymize(source, Profile.build(), KeyedPseudonyms(KEY)).dataset
    deep = result.DerivationCodeSequence[0].SourceImageSequence[0].ReferencedImageSequence[0]
    assert deep.ReferencedSOPInstanceUID == result.SOPInstanceUID != source.SOPInstanceUID
    assert deep.ReferencedSOPClassUID == CT
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID


def test_sequence_deeper_than_the_limit_fails() -> None:
    seq = Sequence([Dataset()])
    for _ in range(70):
        item = Dataset()
        item.ContentSequence = seq
        seq = Sequence([item])
    source = _ct(ContentSequence=seq)
    with pytest.raises(AnonymizationError, match="sequence nesting deeper than 64"):
        anonymize(source, Profile.build(), KeyedPseudonyms(KEY))
    anonymize(source, Profile.build(max_sequence_depth=100), KeyedPseudonyms(KEY))


def test_private_blocks_and_private_sequences_are_removed() -> None:
    ds = _ct()
    block = ds.private_block(0x0029, "VENDOR X", create=True)
    item = Dataset()
    item.PatientID = "GATE-ID-4711"
    block.add_new(0x10, "SQ", Sequence([item]))
    block.add_new(0x11, "LO", "GATEFAMILY")
    result = anonymize(_through_file(ds), Profile.build(), KeyedPseudonyms(KEY)).dataset
    assert not [e for e in result if e.tag.is_private]


def test_missing_sop_instance_uid_is_refused() -> None:
    ds = _ct()
    del ds.SOPInstanceUID
    with pytest.raises(AnonymizationError, match="SOPInstanceUID or SOPClassUID is missing"):
        anonymize(ds, Profile.build(), KeyedPseudonyms(KEY))


def test_dates_shift_together_and_keep_the_interval() -> None:
    source = _through_file(_ct(StudyDate="20200301", StudyTime="233000",
                               SeriesDate="20200302", SeriesTime="001500"))
    out = anonymize(source, Profile.build([Option.RETAIN_LONG_MODIFIED_DATES]),
                    KeyedPseudonyms(KEY)).dataset
    import datetime as dt

    def moment(d: str, t: str) -> dt.datetime:
        return dt.datetime.strptime(d + t, "%Y%m%d%H%M%S")

    before = moment("20200302", "001500") - moment("20200301", "233000")
    after = moment(out.SeriesDate, out.SeriesTime) - moment(out.StudyDate, out.StudyTime)
    assert before == after
    assert out.StudyDate != "20200301"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_deferred_pixel_data_streams_through_byte_for_byte(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pydicom.filewriter import dcmwrite

    from anonymizer.streams import FileWindow

    ds = _ct(Rows=64, Columns=64, BitsAllocated=16, BitsStored=16, HighBit=15,
             PixelRepresentation=0, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.PixelData = bytes(range(256)) * 32
    source = tmp_path / "in.dcm"
    _through_file(ds).save_as(source, enforce_file_format=True)
    deferred = dcmread(source, defer_size=1024)
    assert deferred._dict[0x7FE00010].value is None  # pydicom did not read it
    result = anonymize(deferred, Profile.build(), KeyedPseudonyms(KEY))
    window = result.dataset._dict[0x7FE00010].value
    assert window.raw.__class__ is FileWindow  # a window on the source file, not a copy
    out = tmp_path / "out.dcm"
    dcmwrite(out, result.dataset, enforce_file_format=True)
    assert dcmread(out).PixelData == bytes(range(256)) * 32
    assert window.raw._file is None  # the source file was released at the end of the value
