"""Each PS3.15 E.3 option: the attributes it changes and the ones it keeps.

For every option, a dataset carries each attribute that the option's column
of Table E.1-1 names; it is de-identified under the Basic Profile alone and
under the Basic Profile plus that option, and each attribute must come out as
the respective action says.
"""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from anonymizer import KeyedPseudonyms, Option, PatientKey, Profile, anonymize
from anonymizer.dates import shift_date, shift_datetime, shift_time
from anonymizer.dummies import DUMMY_TEXT
from anonymizer.table import load_table

KEY = b"option tests secret, 32 bytes..."
CT = "1.2.840.10008.5.1.4.1.1.2"


def _value(vr: str, n: int) -> object:
    return {
        "DA": f"2019{n % 12 + 1:02d}{n % 27 + 1:02d}",
        "TM": f"10{n % 60:02d}{(n * 7) % 60:02d}",
        "DT": f"2019{n % 12 + 1:02d}{n % 27 + 1:02d}1030{n % 60:02d}",
        "UI": f"1.2.826.0.1.3680043.10.1.{n}",
        "PN": f"OPTVAL{n}^GIVEN",
        "AE": f"OPTAE{n}",
        "AS": "045Y",
        "CS": f"OPTCS{n}",
        "DS": "1.5",
        "IS": str(n),
        "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 1.5, "FD": 1.5,
        "OB": b"\x01\x02", "OW": b"\x01\x02", "UN": b"\x01\x02",
    }.get(vr, f"option value {n}")


def _base() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1.999999"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1.999998"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.999997"
    ds.PatientID = "OPTPATIENT1"
    ds.PatientName = "PATIENTFAMILY^PATIENTGIVEN"
    ds.Modality = "CT"
    return ds


def _with_rows(option: Option) -> tuple[Dataset, dict[int, object]]:
    ds = _base()
    planted: dict[int, object] = {}
    for n, row in enumerate(load_table().rows):
        if row.option_action(option.value) is None or not row.keyword:
            continue
        tag = tag_for_keyword(row.keyword)
        if tag is None or tag in ds or tag >> 16 in (0x0000, 0x0002):
            continue  # command and file meta elements never stand in a dataset
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99X", "meaning"
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, _value(vr, n))
        planted[tag] = ds[tag].value
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, planted


def _roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


OPTIONS_WITH_PUBLIC_ROWS = [o for o in Option if o is not Option.RETAIN_SAFE_PRIVATE]


@pytest.mark.parametrize("option", OPTIONS_WITH_PUBLIC_ROWS, ids=lambda o: o.value)
def test_option_changes_exactly_its_column(option: Option) -> None:
    source, planted = _with_rows(option)
    assert planted, f"no attribute planted for {option.value}"
    lookup = KeyedPseudonyms(KEY)
    pseudonym = lookup.patient(PatientKey("", "OPTPATIENT1"))
    basic = _roundtrip(anonymize(source, Profile.build([]), lookup).dataset)
    chosen = _roundtrip(anonymize(source, Profile.build([option]), lookup).dataset)
    changed = 0
    for tag, original in planted.items():
        code = load_table().by_tag[tag].option_action(option.value)
        vr = dictionary_VR(tag).split(" or ")[0]
        keyword = load_table().by_tag[tag].keyword
        if code == "K":
            assert chosen[tag].value == original, f"{keyword} not kept under {option.value}"
            if vr != "SQ":  # a sequence the Basic Profile walks may come out the same
                assert tag not in basic or basic[tag].value != original, keyword
        elif vr in ("DA", "TM", "DT"):  # C on a date: shifted by the patient's offset
            expected = {
                "DA": lambda v: shift_date(v, pseudonym.day_offset),
                "TM": lambda v: shift_time(v, pseudonym.second_offset),
                "DT": lambda v: shift_datetime(v, pseudonym.day_offset, pseudonym.second_offset),
            }[vr](str(original))
            partnered = keyword.endswith(("Date", "Time"))
            assert chosen[tag].value != original, f"{keyword} not shifted"
            if not partnered:
                assert chosen[tag].value == expected, keyword
        elif vr == "SQ":
            assert len(chosen[tag].value) == 1, f"{keyword} sequence not kept and cleaned"
            assert chosen[tag].value[0].CodeValue == "1"
        elif vr == "UI":
            assert chosen[tag].value != original, keyword
        else:  # C on text without identifiers: kept as it was
            assert chosen[tag].value == original, f"{keyword} not kept by cleaning"
        changed += 1
    assert changed == len(planted)
    # what the option does not name is the same under both profiles
    named = {row.tag for row in load_table().rows if row.option_action(option.value)}
    for elem in basic:
        if elem.tag not in named and elem.keyword not in ("DeidentificationMethod",
                                                            "DeidentificationMethodCodeSequence",
                                                            "LongitudinalTemporalInformationModified"):
            assert chosen[elem.tag].value == elem.value, elem.keyword


def test_clean_descriptors_removes_identifiers_from_descriptions() -> None:
    ds = _base()
    ds.StudyDescription = "CT chest of PatientFamily PatientGiven, id OPTPATIENT1"
    ds.ImageComments = "no identifiers here"
    lookup = KeyedPseudonyms(KEY)
    out = anonymize(ds, Profile.build([Option.CLEAN_DESCRIPTORS]), lookup).dataset
    assert out.StudyDescription == "CT chest of , id"
    assert "ImageComments" in out  # unlisted text: cleaned, nothing to clean
    basic = anonymize(ds, Profile.build([]), lookup).dataset
    assert "StudyDescription" not in basic  # X under the Basic Profile


def test_retain_safe_private_keeps_only_listed_creators() -> None:
    ds = _base()
    ds.private_block(0x0009, "SAFE VENDOR 1", create=True).add_new(0x01, "LO", "kept value")
    ds.private_block(0x0011, "OTHER VENDOR", create=True).add_new(0x01, "LO", "gone value")
    lookup = KeyedPseudonyms(KEY)
    profile = Profile.build(
        [Option.RETAIN_SAFE_PRIVATE], safe_private_creators=["SAFE VENDOR 1"]
    )
    out = _roundtrip(anonymize(ds, profile, lookup).dataset)
    assert out.private_block(0x0009, "SAFE VENDOR 1")[0x01].value == "kept value"
    assert not [e for e in out if e.tag.group == 0x0011]
    basic = anonymize(ds, Profile.build([]), lookup).dataset
    assert not [e for e in basic if e.tag.is_private]


def test_clean_graphics_keeps_overlays_and_basic_removes_the_whole_group() -> None:
    ds = _base()
    ds.add_new(0x60000010, "US", 2)  # OverlayRows
    ds.add_new(0x60000011, "US", 8)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    lookup = KeyedPseudonyms(KEY)
    kept = anonymize(ds, Profile.build([Option.CLEAN_GRAPHICS]), lookup).dataset
    assert kept[0x60003000].value == b"\xff\x00" and kept[0x60000010].value == 2
    basic = anonymize(ds, Profile.build([]), lookup).dataset
    assert not [e for e in basic if e.tag.group == 0x6000]


def test_retain_uids_keeps_every_uid_and_marks_the_option() -> None:
    ds = _base()
    lookup = KeyedPseudonyms(KEY)
    out = anonymize(ds, Profile.build([Option.RETAIN_UIDS]), lookup).dataset
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.StudyInstanceUID == ds.StudyInstanceUID
    assert "113110" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert anonymize(ds, Profile.build([]), lookup).dataset.SOPInstanceUID != ds.SOPInstanceUID


def test_structured_content_is_cleaned_or_replaced_by_dummies() -> None:
    ds = _base()
    text = Dataset()
    text.ValueType = "TEXT"
    text.RelationshipType = "CONTAINS"
    text.TextValue = "Findings for PatientFamily: normal"
    ds.ContentSequence = Sequence([text])
    lookup = KeyedPseudonyms(KEY)
    cleaned = anonymize(ds, Profile.build([Option.CLEAN_STRUCTURED_CONTENT]), lookup).dataset
    assert cleaned.ContentSequence[0].TextValue == "Findings for : normal"
    dummied = anonymize(ds, Profile.build([]), lookup).dataset  # D: dummy content
    assert dummied.ContentSequence[0].TextValue == DUMMY_TEXT
    assert dummied.ContentSequence[0].ValueType == "TEXT"
