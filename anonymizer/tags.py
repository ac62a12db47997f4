"""What the engine knows about tags and elements before it looks at values.

The VR groups the engine dispatches on, the tables derived once from
pydicom's data dictionary (every PN and SQ tag, the Date/Time partners that
shift as one instant), and small checks on raw elements.
"""

from __future__ import annotations

__all__ = [
    "Element", "check_complete", "known", "one_or_many", "unchanged", "unlisted_action",
    "vr_as_read", "vr_of",
]

from pydicom._dicom_dict import DicomDictionary
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VR,
    repeater_has_tag,
    tag_for_keyword,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from .actions import Action
from .allowlist import SAFE_TEXT_TAGS
from .errors import AnonymizationError
from .identifiers import IDENTIFIER_KEYWORDS
from .profile import Profile

Element = DataElement | RawDataElement

TEXT_VRS = frozenset({"AE", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)
KEEP_VRS = frozenset(
    {"CS", "AS", "DS", "IS", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT",
     "OB", "OD", "OF", "OL", "OV", "OW"}
)
IDENTIFIER_TAGS: dict[int, str] = {
    tag: kind
    for keyword, kind in IDENTIFIER_KEYWORDS.items()
    if (tag := tag_for_keyword(keyword)) is not None
}
#: every public PN tag (their values are identifiers) and the other identifier tags
COLLECT_KINDS: dict[int, str] = {
    **{tag: "name" for tag, entry in DicomDictionary.items() if entry[0] == "PN"},
    **IDENTIFIER_TAGS,
}
SQ_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
#: DA tag -> TM tag of the same name (StudyDate -> StudyTime, ...): shifted as one instant
DATE_TIME_PARTNERS: dict[int, int] = {
    date_tag: time_tag
    for date_tag, entry in DicomDictionary.items()
    if entry[0] == "DA" and entry[4].endswith("Date")
    and (time_tag := tag_for_keyword(entry[4][:-4] + "Time")) is not None
    and DicomDictionary[time_tag][0] == "TM"
}
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ENCAPSULATED_DOCUMENT = 0x00420011
#: Encapsulated PDF, CDA, STL, OBJ and MTL Storage (PS3.4 B.5): the document is the content
DOCUMENT_SOP_CLASSES = frozenset(f"1.2.840.10008.5.1.4.1.1.104.{n}" for n in range(1, 6))
OVERLAY_DATA = 0x60003000
#: results kept in Profile.value_cache before it starts afresh: with CACHED_VALUE_BYTES,
#: the cache holds at most about 80 MB
VALUE_CACHE_LIMIT = 10_000
#: values longer than this are not cached (large sequences are one instance's own)
CACHED_VALUE_BYTES = 4_096


def known(tag: int) -> bool:
    """In the DICOM dictionary, repeating groups (50xx, 60xx) included."""
    return dictionary_has_tag(tag) or repeater_has_tag(tag)


def vr_of(tag: int, elem: Element) -> str:
    return vr_as_read(tag, elem.VR)


def vr_as_read(tag: int, vr: str | None) -> str:
    """The VR to treat an element by, given the VR it was read with (None: implicit VR)."""
    if vr and vr != "UN":
        return str(vr)
    if known(tag):
        return str(dictionary_VR(tag)).split(" or ")[0]
    return "UN"


def check_complete(raw: Element) -> None:
    if (isinstance(raw, RawDataElement) and isinstance(raw.value, bytes)
            and raw.length != 0xFFFFFFFF and len(raw.value) != raw.length):
        tag = int(raw.tag)
        raise AnonymizationError(
            f"truncated: ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds "
            f"{len(raw.value)} of its {raw.length} bytes"
        )


def one_or_many(values: list[str]) -> str | list[str] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def unchanged(item: Dataset, made: Dataset) -> bool:
    """True when ``made`` holds exactly ``item``'s elements, each the very same object."""
    if len(made._dict) != len(item._dict):
        return False
    return all(made._dict.get(tag) is elem for tag, elem in item._dict.items())


def unlisted_action(profile: Profile, tag: int, vr: str, strict: bool) -> Action:
    """The action for an attribute Table E.1-1 does not list (see anonymizer.allowlist)."""
    if not known(tag):
        return Action.REMOVE  # an unknown public attribute: nobody can say it is safe
    if vr == "SQ" or vr in KEEP_VRS:
        return Action.KEEP
    if vr == "UI":
        return Action.UID
    if vr == "PN":
        return Action.DUMMY
    if vr in DATE_VRS:
        if profile.keeps_dates:
            return Action.KEEP
        return Action.CLEAN if profile.shifts_dates else Action.DUMMY
    if vr in TEXT_VRS:
        if tag in SAFE_TEXT_TAGS:
            return Action.KEEP
        return Action.DUMMY if strict else Action.CLEAN
    return Action.REMOVE
