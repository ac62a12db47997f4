"""What one instance leaves for the next (shared results, layouts) never changes an output.

The engine shares work between the instances of a series: results of actions
on repeated values, what the previous instance of a layout collected, values
the residual-PHI gate found clean. Each instance must come out exactly as it
would with nothing shared, and a value found clean for one patient or under
one character set is looked at again for another.
"""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from anonymizer import KeyedPseudonyms, Option, Profile, ResidualPHIError, anonymize

KEY = b"series reuse tests secret 32 b.."
_MANUFACTURER = BaseTag(0x00080070)
CT = "1.2.826.0.1.3680043.10.7"


def _slice(index: int, *, family: str = "REUSEFAMILY", syntax: UID = ExplicitVRLittleEndian,
           charset: str = "ISO_IR 100", **attrs: object) -> Dataset:
    """A CT slice as read from a file: raw elements, one patient, one series."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = f"{CT}.3.{index}"
    ds.StudyInstanceUID = f"{CT}.1"
    ds.SeriesInstanceUID = f"{CT}.2"
    ds.FrameOfReferenceUID = f"{CT}.4"
    ds.PatientName = f"{family}^GIVEN"
    ds.PatientID = f"ID-{family}"
    ds.PatientBirthDate = "19500101"
    ds.StudyDate, ds.StudyTime = "20240311", "093012"
    ds.ContentDate, ds.ContentTime = "20240311", f"0940{index % 60:02d}"
    ds.AcquisitionDateTime = f"20240311093{index % 10}12.5"
    ds.InstanceNumber = str(index)
    ds.StudyDescription = f"CT CHEST {family}"
    ds.ImageComments = "NO COMMENT"
    ds.Manufacturer = "ACME"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = f"{CT}.1"
    ds.ReferencedStudySequence = Sequence([ref])
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _series() -> list[Dataset]:
    """Slices as a series brings them, with the values that change changing."""
    return [
        _slice(1), _slice(2), _slice(3),
        _slice(4, StudyDescription="CT CHEST"),  # no identifier left to clean
        _slice(5, ContentTime="235959"),  # the shift carries into the next day
        _slice(6, family="OTHERFAMILY"),  # another patient in the same layout
        # ... whose values were cleaned or shifted for the first one
        _slice(11, family="OTHERFAMILY", ImageComments="SEEN BY REUSEFAMILY",
               AcquisitionDateTime="20240311093112.5"),
        _slice(7, ImageComments="SEEN BY REUSEFAMILY"),
        _slice(12, family="OTHERFAMILY", ImageComments="SEEN BY REUSEFAMILY"),
        _slice(8, syntax=ImplicitVRLittleEndian),
        _slice(9, charset="ISO_IR 192"),
        _slice(10),
    ]


@pytest.mark.parametrize("options", [
    None,
    [Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_UIDS],
    [Option.CLEAN_DESCRIPTORS],
])
def test_each_instance_comes_out_as_it_would_alone(options: list[Option] | None) -> None:
    shared = Profile.build() if options is None else Profile.build(options)
    lookup = KeyedPseudonyms(KEY)
    for ds in _series() + _series():  # twice: the second pass meets only shared results
        alone = Profile.build() if options is None else Profile.build(options)
        expected = anonymize(ds, alone, KeyedPseudonyms(KEY))
        got = anonymize(ds, shared, lookup)
        assert _bytes(got.dataset) == _bytes(expected.dataset)
        assert dict(got.counts) == dict(expected.counts)
        assert dict(got.uid_map) == dict(expected.uid_map)
        assert got.pseudonym == expected.pseudonym


def test_a_value_found_clean_for_one_patient_is_scanned_for_the_next() -> None:
    profile = Profile.build()
    lookup = KeyedPseudonyms(KEY)
    anonymize(_slice(1, Manufacturer="ACME"), profile, lookup)  # ACME is clean for this patient
    with pytest.raises(ResidualPHIError, match=r"\(0008,0070\) Manufacturer"):
        anonymize(_slice(2, family="ACME", Manufacturer="ACME"), profile, lookup)


def test_a_value_found_clean_under_one_character_set_is_scanned_under_another() -> None:
    profile = Profile.build()
    lookup = KeyedPseudonyms(KEY)
    # the same bytes: Latin-1 reads them as MÃ\x9cLLER, UTF-8 as MÜLLER, the patient's name
    manufacturer = "MÜLLER".encode().decode("latin-1")
    latin = _slice(1, family="MÜLLER", Manufacturer=manufacturer)
    assert latin._dict[_MANUFACTURER].value == "MÜLLER".encode() + b" "
    anonymize(latin, profile, lookup)
    utf8 = _slice(2, family="MÜLLER", charset="ISO_IR 192", Manufacturer="MÜLLER")
    assert utf8._dict[_MANUFACTURER].value == latin._dict[_MANUFACTURER].value
    with pytest.raises(ResidualPHIError, match=r"\(0008,0070\) Manufacturer"):
        anonymize(utf8, profile, lookup)
