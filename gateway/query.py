"""C-FIND identifiers to index queries, and index rows back to identifiers (PS3.4 C.4.1, C.6).

Request identifier (PS3.4 C.4.1.1.3.1, C.6.1.1 Patient Root, C.6.2.1 Study
Root):

- QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE; PATIENT does
  not exist in the Study Root model. Missing or other: 0xA900.
- Hierarchical search (PS3.4 C.4.1.3.1): the unique key of every level
  above the query level must be given with a single value (Patient Root:
  PatientID; both: StudyInstanceUID above SERIES, SeriesInstanceUID above
  IMAGE). Missing, empty, a wildcard or a list: 0xA900.
- Every key the index holds at or above the query level (:data:`KEYWORDS`)
  matches as :mod:`storage.matching` says; a value that breaks its rule
  (a wildcard in a UID, a malformed date range): 0xA900, naming the key.
  Patient attributes other than PatientID are accepted as keys below the
  PATIENT level in the Patient Root model too (as in the Study Root model).
- Any other key (not indexed, a level below the query level, a sequence:
  the index holds no code sequences to match) is returned empty; when it
  carried a value to match, the responses say so with 0xFF01 (optional
  keys not supported, PS3.4 C.4.1.1.4) instead of 0xFF00.
- Combined date-time matching of StudyDate with StudyTime (PS3.4
  C.2.2.2.5) applies when the caller asked for it in SOP Class Extended
  Negotiation (PS3.4 C.5.1.1.1, byte 2), which :func:`extended_negotiation`
  accepts; relational queries, fuzzy name matching and timezone adjustment
  are declined.

Response identifier: every key requested, with the index's value or empty;
the unique keys of the query level and the levels above; QueryRetrieveLevel;
SpecificCharacterSet ``ISO_IR 192`` (UTF-8, whatever the request used);
RetrieveAETitle (this node); InstanceAvailability ``ONLINE`` when asked.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from storage.matching import Match, MatchError, Single, Universal, parse
from storage.search import FIELDS, Level, Query, Scope

__all__ = [
    "IDENTIFIER_DOES_NOT_MATCH",
    "KEYWORDS",
    "MULTI_VALUED",
    "Find",
    "IdentifierError",
    "Root",
    "datetime_matching",
    "extended_negotiation",
    "parse_identifier",
    "response_elements",
    "to_identifier",
]

#: PS3.4 C.4.1.1.4: "Identifier does not match SOP Class".
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
#: The character set of every response: UTF-8 (PS3.3 C.12.1.1.2).
RESPONSE_CHARACTER_SET: Final = "ISO_IR 192"

#: DICOM keyword -> index field (:data:`storage.search.FIELDS`).
KEYWORDS: Final[Mapping[str, str]] = {
    "PatientID": "patient_id",
    "PatientName": "patient_name",
    "PatientSex": "patient_sex",
    "PatientBirthDate": "patient_birth_date",
    "NumberOfPatientRelatedStudies": "number_of_patient_related_studies",
    "NumberOfPatientRelatedSeries": "number_of_patient_related_series",
    "NumberOfPatientRelatedInstances": "number_of_patient_related_instances",
    "StudyInstanceUID": "study_instance_uid",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "StudyDescription": "study_description",
    "ReferringPhysicianName": "referring_physician_name",
    "ModalitiesInStudy": "modalities_in_study",
    "SOPClassesInStudy": "sop_classes_in_study",
    "NumberOfStudyRelatedSeries": "number_of_study_related_series",
    "NumberOfStudyRelatedInstances": "number_of_study_related_instances",
    "SeriesInstanceUID": "series_instance_uid",
    "Modality": "modality",
    "SeriesNumber": "series_number",
    "SeriesDescription": "series_description",
    "BodyPartExamined": "body_part_examined",
    "NumberOfSeriesRelatedInstances": "number_of_series_related_instances",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "InstanceNumber": "instance_number",
    "AvailableTransferSyntaxUID": "available_transfer_syntax_uid",
}

#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE: Final[Mapping[Level, str]] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

#: Returned with the index's multi-valued text split at backslashes.
MULTI_VALUED: Final = frozenset({"modalities_in_study", "sop_classes_in_study"})
#: Set by the node in every response, whatever the request held.
_FIXED: Final = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"})

#: PS3.4 C.5.1.1.1 service-class application information: byte 2 is date-time matching.
_DATETIME_BYTE: Final = 1


class Root(str, enum.Enum):
    """The two Query/Retrieve information models served, by FIND SOP Class UID."""

    PATIENT = str(PatientRootQueryRetrieveInformationModelFind)
    STUDY = str(StudyRootQueryRetrieveInformationModelFind)


class IdentifierError(Exception):
    """The identifier cannot be served: ``status`` and an Error Comment naming the rule."""

    def __init__(self, comment: str, status: int = IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True, slots=True)
class Find:
    """A parsed C-FIND request.

    ``returned`` lists the response's keys as ``(tag, VR, field)``, the
    field being ``""`` for a key the index does not hold; ``unsupported``
    tells that such a key carried a value to match (0xFF01).
    """

    root: Root
    query: Query
    returned: tuple[tuple[BaseTag, str, str], ...]
    unsupported: bool


def extended_negotiation(requested: bytes) -> bytes:
    """Our answer to a Q/R FIND SOP Class Extended Negotiation item (PS3.4 C.5.1.1.1).

    Accepts combined date-time matching when asked; declines relational
    queries, fuzzy semantic matching of person names and timezone
    adjustment. The answer is as long as the request (at most 4 bytes).
    """
    wanted = bytes(requested[:4])
    return bytes(1 if index == _DATETIME_BYTE and value == 1 else 0
                 for index, value in enumerate(wanted))


def datetime_matching(requested: bytes | None) -> bool:
    """Whether the caller's extended negotiation item asked for combined date-time matching."""
    answer = extended_negotiation(requested or b"")
    return len(answer) > _DATETIME_BYTE and answer[_DATETIME_BYTE] == 1


def _values(element: DataElement) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or getattr(element, "VM", 1) > 1:
        return [str(item) for item in value]
    if isinstance(value, bytes):
        return [value.decode("ascii", "replace")]
    return [str(value)]


def _has_value(element: DataElement) -> bool:
    if element.VR == "SQ":
        return any(_has_value(inner) for item in element.value for inner in item)
    return bool(_values(element))


def _level(ds: Dataset, root: Root) -> Level:
    text = str(ds.get("QueryRetrieveLevel", "") or "").strip()
    try:
        level = Level(text)
    except ValueError:
        raise IdentifierError(
            "QueryRetrieveLevel: expected PATIENT, STUDY, SERIES or IMAGE"
            if text else "QueryRetrieveLevel is missing") from None
    if root is Root.STUDY and level is Level.PATIENT:
        raise IdentifierError("QueryRetrieveLevel PATIENT is not in the Study Root model")
    return level


def _higher_keys(root: Root, level: Level) -> list[str]:
    """The unique keys a hierarchical query must give above ``level`` (PS3.4 C.4.1.3.1)."""
    above = [lvl for lvl in Level if lvl.depth < level.depth]
    if root is Root.STUDY:
        above = [lvl for lvl in above if lvl is not Level.PATIENT]
    return [UNIQUE[lvl] for lvl in above]


def parse_identifier(ds: Dataset, root: Root, scope: Scope, *,
                     combined_datetime: bool = False) -> Find:
    """Turn a C-FIND identifier into an index query (see the module notes).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The request identifier.
    root : Root
        The information model of the request's SOP Class.
    scope : storage.search.Scope
        What the caller may see.
    combined_datetime : bool
        Whether the caller negotiated combined date-time matching.

    Returns
    -------
    Find
        The query and the keys to return.

    Raises
    ------
    IdentifierError
        0xA900 with a comment naming the key and the rule.
    """
    level = _level(ds, root)
    keys: dict[str, Match] = {}
    returned: list[tuple[BaseTag, str, str]] = []
    unsupported = False
    for element in ds:
        keyword = element.keyword
        if keyword in _FIXED or element.tag.group == 0x0000 or element.tag.is_private:
            continue
        name = KEYWORDS.get(keyword, "")
        if name and FIELDS[name].level.depth <= level.depth:
            try:
                keys[name] = parse(_values(element), FIELDS[name].kind)
            except (MatchError, ValueError, TypeError) as exc:
                raise IdentifierError(f"{keyword}: {exc}") from None
            returned.append((element.tag, dictionary_VR(element.tag), name))
            continue
        returned.append((element.tag, element.VR, ""))
        unsupported = unsupported or _has_value(element)
    for keyword in _higher_keys(root, level):
        match = keys.get(KEYWORDS[keyword], Universal())
        if not isinstance(match, Single) or "*" in match.value or "?" in match.value:
            raise IdentifierError(f"{keyword}: a single value is required at the "
                                  f"{level.value} level (hierarchical query)")
    for keyword in [*_higher_keys(root, level), UNIQUE[level]]:
        name = KEYWORDS[keyword]
        if name not in keys:
            keys[name] = Universal()
            tag = Tag(keyword)
            returned.append((tag, dictionary_VR(tag), name))
    query = Query(level=level, keys=keys, scope=scope, combined_datetime=combined_datetime)
    return Find(root=root, query=query, returned=tuple(returned), unsupported=unsupported)


def _element(tag: BaseTag, vr: str, value: Any) -> DataElement:
    # values come from the index, which holds what was received and accepted:
    # send them as they are rather than fail the whole query on one odd value
    return DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)


def response_elements(find: Find, retrieve_ae_title: str
                      ) -> list[tuple[int, str, bytes | str | None]]:
    """The elements of every response to ``find``, for :class:`gateway.responses.IdentifierEncoder`.

    ``(tag, VR, source)``: ``source`` is the index field the value comes
    from, the fixed value, or ``None`` for an element always sent empty;
    the same elements and values as :func:`to_identifier` gives.
    """
    elements: dict[int, tuple[int, str, bytes | str | None]] = {
        0x00080005: (0x00080005, "CS", RESPONSE_CHARACTER_SET.encode()),
        0x00080052: (0x00080052, "CS", find.query.level.value.encode()),
        0x00080054: (0x00080054, "AE", retrieve_ae_title.encode()),
    }
    for tag, vr, name in find.returned:
        source: bytes | str | None = name or None
        if tag == 0x00080056:
            source = b"ONLINE"
        elif vr == "SQ":
            source = None
        elements[int(tag)] = (int(tag), vr, source)
    return list(elements.values())


def to_identifier(row: Mapping[str, Any], find: Find, retrieve_ae_title: str) -> Dataset:
    """Build one response identifier from an index row (see the module notes).

    Parameters
    ----------
    row : Mapping[str, Any]
        Field name -> stored value, from :func:`storage.search.stream`.
    find : Find
        The parsed request.
    retrieve_ae_title : str
        This node's AE title, where the match can be retrieved from.

    Returns
    -------
    pydicom.dataset.Dataset
        The identifier of a pending response.
    """
    ds = Dataset()
    ds.add(_element(Tag(0x0008, 0x0005), "CS", RESPONSE_CHARACTER_SET))
    ds.add(_element(Tag(0x0008, 0x0052), "CS", find.query.level.value))
    ds.add(_element(Tag(0x0008, 0x0054), "AE", retrieve_ae_title))
    for tag, vr, name in find.returned:
        value: Any = None
        if tag == 0x00080056:  # InstanceAvailability: every indexed file is on line
            value = "ONLINE"
        elif vr == "SQ":
            value = []
        elif name:
            stored = row.get(name)
            if name in MULTI_VALUED:
                value = [item for item in str(stored or "").split("\\") if item] or None
            elif stored is not None and stored != "":
                value = stored
        ds.add(_element(tag, vr, value))
    return ds

