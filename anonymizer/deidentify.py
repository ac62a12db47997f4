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

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

from . import gate
from .engine import DOCUMENT_SOP_CLASSES, Walker
from .errors import AnonymizationError
from .identifiers import Identifiers
from .profile import Profile
from .pseudonyms import PatientKey, Pseudonym, PseudonymLookup

__all__ = ["anonymize", "Result", "OriginalStudy", "IMPLEMENTATION_CLASS_UID"]

#: This implementation's class UID (PS3.7 D.3.3.2), a 2.25 UUID UID.
IMPLEMENTATION_CLASS_UID = UID("2.25.265460895359661878355929324491037677409")
IMPLEMENTATION_VERSION_NAME = "DICOMGW_0_1"


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

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.get("StudyInstanceUID", ""))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def _patient_key(ds: Dataset) -> PatientKey:
    return PatientKey(
        issuer=_text(ds, "IssuerOfPatientID"),
        patient_id=_text(ds, "PatientID"),
        fallback=f"{_text(ds, 'PatientName')}|{_text(ds, 'PatientBirthDate')}",
    )


def _review_reasons(ds: Dataset, profile: Profile) -> list[str]:
    reasons = []
    burned_in = _text(ds, "BurnedInAnnotation").strip().upper()
    if burned_in == "YES":
        reasons.append("BurnedInAnnotation is YES: pixel data may show identifying text")
    elif str(ds.get("SOPClassUID", "")) in profile.risky_sop_classes and burned_in != "NO":
        reasons.append(
            "SOP class often carries burned-in text and BurnedInAnnotation is not NO"
        )
    if _text(ds, "RecognizableVisualFeatures").strip().upper() == "YES":
        reasons.append("RecognizableVisualFeatures is YES")
    return reasons


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    implicit, _little = ds.original_encoding
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _mark(out: Dataset, profile: Profile, pseudonym: Pseudonym) -> None:
    out.PatientName = pseudonym.patient_name
    out.PatientID = pseudonym.patient_id
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = profile.method_description()
    codes = Sequence()
    for value, meaning in profile.method_codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    out.DeidentificationMethodCodeSequence = codes
    if profile.shifts_dates:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    elif profile.keeps_dates:
        out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        out.LongitudinalTemporalInformationModified = "REMOVED"


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
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise AnonymizationError("SOPInstanceUID or SOPClassUID is missing")
    walker = Walker(profile, lookup)
    walker.keep_document = str(ds.SOPClassUID) in DOCUMENT_SOP_CLASSES
    try:
        walker.identifiers = Identifiers.build(walker.collect(ds))
        key = _patient_key(ds)
        pseudonym = lookup.patient(key)
        walker.pseudonym = pseudonym
        out = walker.dataset(ds, 0, False)
    except RecursionError:
        raise AnonymizationError(
            f"sequence nesting deeper than {profile.max_sequence_depth}"
        ) from None
    _mark(out, profile, pseudonym)
    review = _review_reasons(ds, profile) + walker.review
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(out.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(out.SOPInstanceUID))
    meta.TransferSyntaxUID = _transfer_syntax(ds)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    out.file_meta = meta
    out.preamble = b"\0" * 128
    if profile.residual_phi_gate:
        gate.check(out, walker.identifiers)
    study = OriginalStudy(
        _text(ds, "StudyInstanceUID"), _text(ds, "AccessionNumber"), _text(ds, "StudyID")
    )
    return Result(
        dataset=out,
        needs_review=tuple(review),
        counts=dict(walker.counts),
        uid_map=dict(walker.uid_map),
        patient=key,
        pseudonym=pseudonym,
        study=study,
        options=tuple(sorted(o.value for o in profile.options)),
    )
