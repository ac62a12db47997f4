"""De-identify one dataset: the engine's entry point.

``anonymize`` returns a new dataset and a report and never mutates its
input. The result carries the marks PS3.15 E.1 asks for
(PatientIdentityRemoved, DeidentificationMethod and its CID 7050 code
sequence, LongitudinalTemporalInformationModified), a File Meta Information
rebuilt from scratch (PS3.10 7.1: MediaStorageSOPInstanceUID follows the
replaced SOPInstanceUID; nothing of the sender's meta survives) and a zeroed
128-byte preamble (PS3.10 7.1; the preamble must never carry data: see
CVE-2019-11687).
"""

from __future__ import annotations

from collections import abc
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import gate, memo
from .engine import Walker
from .errors import AnonymizationError
from .identifiers import Identifiers
from .profile import Profile
from .pseudonyms import PatientKey, Pseudonym, PseudonymLookup
from .tags import DOCUMENT_SOP_CLASSES
from .values import encode

__all__ = ["IMPLEMENTATION_CLASS_UID", "OriginalStudy", "Result", "anonymize"]

#: This implementation's class UID (PS3.7 D.3.3.2), a 2.25 UUID UID.
IMPLEMENTATION_CLASS_UID = UID("2.25.265460895359661878355929324491037677409")
IMPLEMENTATION_VERSION_NAME = "DICOMGW_0_1"
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_TRANSFER_SYNTAX = BaseTag(0x00020010)


@dataclass(frozen=True)
class OriginalStudy:
    """The original identifiers of the study (PHI: for the encrypted map, never logs)."""

    study_instance_uid: str
    accession_number: str
    study_id: str


@dataclass(frozen=True)
class Result:
    """What de-identification produced and what it did.

    Attributes
    ----------
    dataset : Dataset
        The de-identified dataset, with ``file_meta`` and a zero ``preamble``.
    needs_review : tuple of str
        Why a person must look before release (burned-in text, documents);
        empty when the instance may be released.
    counts : Mapping
        Elements per action code (D, Z, X, K, C, U).
    uid_map : Mapping
        Original UID -> replacement, for every UID replaced in this instance.
    patient : PatientKey
        The original patient key (PHI).
    pseudonym : Pseudonym
        What replaced the patient.
    study : OriginalStudy
        The original study identifiers (PHI).
    options : tuple of str
        The PS3.15 E.3 options applied.
    """

    dataset: Dataset
    needs_review: tuple[str, ...]
    counts: Mapping[str, int]
    uid_map: Mapping[str, str]
    patient: PatientKey = field(repr=False)
    pseudonym: Pseudonym
    study: OriginalStudy = field(repr=False)
    options: tuple[str, ...]
    #: the new SOP Instance, Study and Series Instance UIDs ('' when absent)
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""


# top-level attributes the engine reads as text, (tag, VR), in the groups it reads them in
_INSTANCE = ((0x00080016, "UI"), (0x00080018, "UI"))  # SOPClassUID, SOPInstanceUID
#: IssuerOfPatientID, PatientID, PatientName, PatientBirthDate
_PATIENT = ((0x00100021, "LO"), (0x00100020, "LO"), (0x00100010, "PN"), (0x00100030, "DA"))
#: BurnedInAnnotation, RecognizableVisualFeatures
_REVIEW = ((0x00280301, "CS"), (0x00280302, "CS"))
#: StudyInstanceUID, AccessionNumber, StudyID
_STUDY = ((0x0020000D, "UI"), (0x00080050, "SH"), (0x00200010, "SH"))
#: SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID (as replaced)
_NEW_UIDS = ((0x00080018, "UI"), (0x0020000D, "UI"), (0x0020000E, "UI"))


def _patient_key(walker: Walker, ds: Dataset) -> PatientKey:
    issuer, patient_id, name, birth_date = walker.texts(ds, _PATIENT)
    return PatientKey(issuer=issuer, patient_id=patient_id, fallback=f"{name}|{birth_date}")


def _review_reasons(walker: Walker, ds: Dataset, profile: Profile, sop_class: str) -> list[str]:
    reasons = []
    burned_in, visual_features = walker.texts(ds, _REVIEW)
    burned_in = burned_in.strip().upper()
    if burned_in == "YES":
        reasons.append("BurnedInAnnotation is YES: pixel data may show identifying text")
    elif sop_class in profile.risky_sop_classes and burned_in != "NO":
        reasons.append(
            "SOP class often carries burned-in text and BurnedInAnnotation is not NO"
        )
    if visual_features.strip().upper() == "YES":
        reasons.append("RecognizableVisualFeatures is YES")
    return reasons


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _TRANSFER_SYNTAX in meta._dict:
        value = meta[_TRANSFER_SYNTAX].value
        return value if isinstance(value, UID) else UID(value)
    implicit, _little = ds.original_encoding
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _marks_dataset(profile: Profile) -> Dataset:
    marks = Dataset()
    marks.PatientIdentityRemoved = "YES"
    marks.DeidentificationMethod = profile.method_description()
    codes = Sequence()
    for value, meaning in profile.method_codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    marks.DeidentificationMethodCodeSequence = codes
    if profile.shifts_dates:
        marks.LongitudinalTemporalInformationModified = "MODIFIED"
    elif profile.keeps_dates:
        marks.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        marks.LongitudinalTemporalInformationModified = "REMOVED"
    return marks


@lru_cache(maxsize=64)
def _encoded_marks(
    options: frozenset[str], implicit: bool, little: bool
) -> tuple[RawDataElement, ...]:
    """The marks of PS3.15 E.1 for these options, encoded once as raw elements.

    Raw elements are immutable, so every output shares them safely.
    """
    marks = _marks_dataset(Profile.build(options))
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, marks)
    buffer.seek(0)
    found = tuple(data_element_generator(buffer, implicit, little))  # type: ignore[arg-type]
    return tuple(e for e in found if isinstance(e, RawDataElement))


def _options(profile: Profile) -> tuple[frozenset[str], tuple[str, ...]]:
    """The names of the profile's options, as a set and sorted (derived once per profile)."""
    found: tuple[frozenset[str], tuple[str, ...]] | None = profile.derived.get("option names")
    if found is None:
        names = [o.value for o in profile.options]
        found = profile.derived["option names"] = (frozenset(names), tuple(sorted(names)))
    return found


def _identifiers(
    found: abc.Sequence[tuple[str, str, str]], cache: dict[Hashable, Any],
) -> Identifiers:
    """:meth:`Identifiers.build`; for the identifiers the previous instance of a layout
    collected (the very same tuple, see :meth:`Walker.collect`), the matcher built then."""
    if not isinstance(found, tuple):
        return Identifiers.build(found)
    key = ("identifiers of", id(found))
    hit = cache.get(key)
    if hit is not None and hit[1] is found:
        return cast(Identifiers, hit[0])
    built = Identifiers.build(found)
    memo.remember(cache, key, (built, found))  # holds the tuple: its id is not reused meanwhile
    return built


def _meta_element(
    cache: dict[Hashable, Any], tag: int, vr: str, value: str, *, shared: bool,
) -> RawDataElement | None:
    """A File Meta Information element, Explicit VR Little Endian (shared when ``shared``)."""
    key = ("meta", tag, value)
    found: RawDataElement | None = cache.get(key) if shared else None
    if found is None:
        found = encode(tag, vr, [value], (False, True), "ascii")
        if shared:
            memo.remember(cache, key, found)
    return found


def _mark(
    out: Dataset, profile: Profile, options: frozenset[str], pseudonym: Pseudonym,
    source: Dataset, walker: Walker,
) -> None:
    implicit, little = source.original_encoding
    if implicit is None or little is None:
        for elem in _marks_dataset(profile):
            out.add(elem)
    else:
        for raw in _encoded_marks(options, implicit, little):
            out._dict[raw.tag] = raw
    codec = walker.codec(source)
    for tag, vr, value in ((_PATIENT_NAME, "PN", pseudonym.patient_name),
                           (_PATIENT_ID, "LO", pseudonym.patient_id)):
        encoded = encode(tag, vr, [value], (implicit, little), codec)
        if encoded is not None:
            out._dict[encoded.tag] = encoded
        else:
            out.add(DataElement(tag, vr, value))


def anonymize(ds: Dataset, profile: Profile, lookup: PseudonymLookup) -> Result:
    """De-identify ``ds`` by PS3.15 Annex E with the profile's options.

    Parameters
    ----------
    ds : Dataset
        The original; read from a file or received; never modified.
    profile : Profile
        The Basic Profile and options (PS3.15 E.1, E.3), resolved.
    lookup : PseudonymLookup
        The pseudonym space: patient pseudonyms, date offsets, UIDs.

    Returns
    -------
    Result
        The new dataset and what was done.

    Raises
    ------
    AnonymizationError
        When the instance cannot be de-identified (no SOP Instance UID,
        nesting deeper than the profile allows, an undecodable element);
        :class:`ResidualPHIError` when an identifier survived.
    """
    walker = Walker(profile, lookup)
    sop_class, sop_instance = walker.texts(ds, _INSTANCE)
    if not sop_class or not sop_instance:
        raise AnonymizationError("SOPInstanceUID or SOPClassUID is missing")
    walker.keep_document = sop_class in DOCUMENT_SOP_CLASSES
    cache = profile.value_cache
    try:
        walker.identifiers = _identifiers(walker.collect(ds), cache)
        key = _patient_key(walker, ds)
        pseudonym = lookup.patient(key)
        walker.pseudonym = pseudonym
        walker.context = (walker.identifiers.pattern, pseudonym)
        out = walker.dataset(ds, 0, False)
    except RecursionError:
        raise AnonymizationError(
            f"sequence nesting deeper than {profile.max_sequence_depth}"
        ) from None
    options, option_names = _options(profile)
    _mark(out, profile, options, pseudonym, ds, walker)
    review = _review_reasons(walker, ds, profile, sop_class) + walker.review
    new_instance, new_study, new_series = walker.texts(ds, _NEW_UIDS, out)
    meta = FileMetaDataset()
    for tag, vr, value in (
        (0x00020002, "UI", sop_class),
        (0x00020003, "UI", new_instance),
        (0x00020010, "UI", _transfer_syntax(ds)),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):  # File Meta Information is always Explicit VR Little Endian (PS3.10 7.1)
        raw = _meta_element(cache, tag, vr, value, shared=tag != 0x00020003)
        if raw is not None:
            meta._dict[raw.tag] = raw
    out.file_meta = meta
    out.preamble = b"\0" * 128
    if profile.residual_phi_gate:
        gate.check(out, walker.identifiers, walker.generated, cache)
    study = OriginalStudy(*walker.texts(ds, _STUDY))
    return Result(
        dataset=out,
        needs_review=tuple(review),
        counts=dict(walker.counts),
        uid_map=dict(walker.uid_map),
        patient=key,
        pseudonym=pseudonym,
        study=study,
        options=option_names,
        sop_instance_uid=new_instance,
        study_instance_uid=new_study,
        series_instance_uid=new_series,
    )
