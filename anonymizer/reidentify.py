"""Re-identification of a result coming back from a consulting institute (PS3.15 E.1, reversed).

An institute reads a de-identified study and sends back what it made of it:
a structured report, a key object selection, a secondary capture, a
reworked series. :func:`reidentify` turns such an object into one the
clinic that sent the study can file under its own patient and study, and
never mutates its input:

- the Patient Module (every attribute of group 0010, at any depth) is
  replaced by the original patient's name, ID, issuer, birth date and sex as
  the node recorded them (empty, Type 2, where it recorded none), so no
  value the institute holds for the patient survives;
- the General Study Module gets the original StudyInstanceUID, AccessionNumber
  and StudyID; StudyDate, StudyTime and ReferringPhysicianName are emptied
  (Type 2: the institute only ever saw shifted or dummy values) and
  StudyDescription is removed;
- every UID (every UI element, in every sequence) that names one of the
  clinic's things (the study, its series, instances, frames of reference)
  goes back to the original (``originals``); any other UID that is not
  well-known names something the institute made and gets a new UID from
  ``new_uid`` (the node's UID root), the same one wherever it stands, so
  references between the institute's objects keep resolving;
- private attributes are removed (the institute's private data is not the
  clinic's business), PatientIdentityRemoved becomes NO and
  DeidentificationMethod, its code sequence and
  LongitudinalTemporalInformationModified are removed (PS3.3 C.12.1);
- where the opinion came from is written in the standard's own place for
  it, the Contributing Equipment Sequence (0018,A001) of the SOP Common
  Module (PS3.3 C.12.1.1.5; purposes from CID 7005): one item for the
  institute (109102 "Processing Equipment": InstitutionName is the
  institute, ContributionDateTime when the result came back) and one for
  this node (109103 "Modifying Equipment": the re-identification).

pydicom only: the caller looks up the originals and passes them in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from .uids import is_well_known

__all__ = ["Originals", "Provenance", "Reidentified", "reidentify", "unread_elements",
           "value_representation"]

_PATIENT_GROUP = 0x0010
_REMOVED_MARKS = ("DeidentificationMethod", "DeidentificationMethodCodeSequence",
                  "LongitudinalTemporalInformationModified", "StudyDescription")
_SEXES = ("M", "F", "O")
_EMPTIED = ("StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True, slots=True)
class Originals:
    """What the clinic sent, as the node recorded it (PHI: never logged)."""

    patient_id: str
    patient_name: str
    issuer_of_patient_id: str
    patient_birth_date: str
    study_instance_uid: str
    accession_number: str
    study_id: str
    patient_sex: str = ""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where the opinion came from and who re-identified it."""

    institute: str
    received_at: datetime
    node_ae_title: str
    manufacturer: str = "dicom-gateway"


@dataclass(frozen=True, slots=True)
class Reidentified:
    """The re-identified copy, and what changed (counts only: safe to log)."""

    dataset: Dataset
    sop_instance_uid: str
    restored_uids: int
    new_uids: int


def _code(value: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return Sequence([item])


def _dt(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _equipment(source: Dataset, provenance: Provenance, now: datetime) -> list[Dataset]:
    institute = Dataset()
    institute.PurposeOfReferenceCodeSequence = _code("109102", "Processing Equipment")
    maker = str(source.get("Manufacturer", "") or "").strip()
    institute.Manufacturer = maker[:64] or provenance.institute[:64]
    institute.InstitutionName = provenance.institute[:64]
    institute.ContributionDateTime = _dt(provenance.received_at)
    institute.ContributionDescription = (
        f"Second opinion from consulting institute {provenance.institute}")[:64]
    node = Dataset()
    node.PurposeOfReferenceCodeSequence = _code("109103", "Modifying Equipment")
    node.Manufacturer = provenance.manufacturer
    node.StationName = provenance.node_ae_title[:16]
    node.ContributionDateTime = _dt(now)
    node.ContributionDescription = "Re-identified for the requesting clinic"
    return [institute, node]


class _UidRewriter:
    """Maps every UI value: back to the original, or to a new UID of the node's root."""

    def __init__(self, originals: Mapping[str, str], new_uid: Callable[[str], str]) -> None:
        self.originals = originals
        self.new_uid = new_uid
        self.made: dict[str, str] = {}
        self.restored = 0

    def one(self, value: str) -> str:
        uid = str(value).strip().rstrip("\0")
        if not uid or is_well_known(uid):
            return uid
        original = self.originals.get(uid)
        if original is not None:
            self.restored += 1
            return original
        made = self.made.get(uid)
        if made is None:
            made = self.made[uid] = self.new_uid(uid)
        return made

    def rewrite(self, ds: Dataset) -> None:
        """Walk ``ds`` reading only sequences and UIDs: large values (pixel data) stay on disk."""
        for raw in unread_elements(ds):
            tag = Tag(raw.tag)
            if tag.is_private or tag.group == _PATIENT_GROUP:  # patient sequences too
                del ds[tag]
                continue
            vr = value_representation(raw)
            if vr == "SQ":
                for item in ds[tag].value:
                    self.rewrite(item)
            elif vr == "UI":
                value = ds[tag].value
                if value in (None, ""):
                    continue
                if isinstance(value, MultiValue | list):
                    ds[tag] = DataElement(tag, "UI", [self.one(v) for v in value])
                else:
                    ds[tag] = DataElement(tag, "UI", self.one(value))


def unread_elements(ds: Dataset) -> list[DataElement | RawDataElement]:
    """The top-level elements of ``ds``; a value read lazily (deferred) is left unread."""
    return [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]


def value_representation(raw: DataElement | RawDataElement) -> str:
    """An element's VR without reading its value: as encoded, else from the dictionary."""
    if raw.VR:
        return str(raw.VR)
    try:
        return str(dictionary_VR(raw.tag))
    except KeyError:
        return ""


def reidentify(ds: Dataset, originals: Originals, uid_originals: Mapping[str, str],
               new_uid: Callable[[str], str], provenance: Provenance,
               now: datetime) -> Reidentified:
    """Re-identify a returned object for the clinic (see the module docstring).

    Parameters
    ----------
    ds : Dataset
        The object as the institute sent it (not modified).
    originals : Originals
        The clinic's patient and study identifiers.
    uid_originals : Mapping[str, str]
        ``{UID as the institute holds it: the clinic's original UID}``.
    new_uid : Callable[[str], str]
        Gives the new UID of the node's root for a UID the institute made;
        should be deterministic, so that a repeat gives the same object.
    provenance : Provenance
        Where the opinion came from.
    now : datetime
        The time of re-identification (timezone-aware).
    """
    out = copy.deepcopy(ds)  # values read lazily (deferred) stay so in the copy
    rewriter = _UidRewriter(uid_originals, new_uid)
    rewriter.rewrite(out)
    out.PatientName = originals.patient_name
    out.PatientID = originals.patient_id
    if originals.issuer_of_patient_id:
        out.IssuerOfPatientID = originals.issuer_of_patient_id
    out.PatientBirthDate = originals.patient_birth_date
    out.PatientSex = originals.patient_sex if originals.patient_sex in _SEXES else ""
    out.StudyInstanceUID = originals.study_instance_uid
    out.AccessionNumber = originals.accession_number
    out.StudyID = originals.study_id
    for keyword in _EMPTIED:
        setattr(out, keyword, "")
    for keyword in _REMOVED_MARKS:
        if keyword in out:
            delattr(out, keyword)
    out.PatientIdentityRemoved = "NO"
    equipment = list(out.get("ContributingEquipmentSequence", []))
    out.ContributingEquipmentSequence = Sequence(equipment + _equipment(ds, provenance, now))
    if getattr(out, "file_meta", None) is not None:
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return Reidentified(out, str(out.SOPInstanceUID), rewriter.restored, len(rewriter.made))
