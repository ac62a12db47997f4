"""Checking a received C-STORE dataset before it is acknowledged (PS3.4 B.2.3).

The network thread only spools (see :mod:`gateway.handlers`); before the
bytes are made durable and answered with Success, their header is checked,
so that nothing the node cannot use is acknowledged (RELIABILITY I1):

- the dataset must parse, and its last element must be whole (pydicom keeps
  a value cut short by the end of the data without complaint) -> 0xC000
  "cannot understand" (Table B.2-1, Cxxx);
- SOP Class and SOP Instance UID must be present, well-formed (PS3.5 9.1:
  digits and dots, at most 64 characters, no leading zeros) and equal to
  the request's Affected SOP Class/Instance UID -> 0xA900 "dataset does not
  match SOP class" (Orthanc answers the same for a mismatch);
- the dataset must not exceed the configured size -> 0xA700 "out of
  resources";
- sequences nested deeper than the configured limit, or items whose
  elements run past their end -> 0xC000; an image whose Pixel Data is
  missing, empty, shorter than its header says, or whose header values are
  out of range -> 0xA900 (:mod:`gateway.structure`).

Values (UIDs included) never appear in the comment returned to the peer or
in the log: the comment names the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from .structure import image_pixels_problem, sequences_problem

__all__ = ["Verdict", "check_received", "is_valid_uid", "OUT_OF_RESOURCES",
           "DOES_NOT_MATCH_SOP_CLASS", "CANNOT_UNDERSTAND"]

OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018


@dataclass(frozen=True)
class Verdict:
    """A refusal: the DIMSE status and an Error Comment (at most 64 characters, no PHI)."""

    status: int
    comment: str


def is_valid_uid(value: str) -> bool:
    """A UID as PS3.5 9.1 defines it: digit components, no leading zeros, <= 64 characters."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def _uid(ds: Dataset, tag: int) -> str | None:
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").rstrip("\0 ")
    return None if value is None else str(value).rstrip("\0 ")


def _last_element_whole(ds: Dataset, size: int) -> bool:
    if not ds._dict:
        return False
    *_, last = ds._dict.values()
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return True
    if last.value is None:  # deferred: its bytes must lie inside the file
        return last.value_tell + last.length <= size
    return len(last.value) == last.length


def check_received(
    path: Path, sop_class_uid: str, sop_instance_uid: str, max_bytes: int,
    max_depth: int = 64,
) -> Verdict | None:
    """Check the dataset pynetdicom wrote to ``path``; None when it may be accepted.

    Parameters
    ----------
    path : Path
        The received file (File Meta Information and dataset).
    sop_class_uid, sop_instance_uid : str
        The request's Affected SOP Class and Instance UIDs.
    max_bytes : int
        The largest dataset the node accepts.
    max_depth : int
        The deepest sequence nesting accepted (``anonymizer.max_sequence_depth``).
    """
    size = path.stat().st_size
    if size > max_bytes:
        return Verdict(OUT_OF_RESOURCES, "dataset exceeds the size limit")
    try:
        ds = dcmread(path, defer_size=1024)
    except RecursionError:
        return Verdict(CANNOT_UNDERSTAND, "sequence nesting too deep")
    except Exception:  # pydicom raises many types on broken input
        return Verdict(CANNOT_UNDERSTAND, "dataset cannot be parsed")
    if not _last_element_whole(ds, size):
        return Verdict(CANNOT_UNDERSTAND, "dataset is truncated")
    found_class, found_instance = _uid(ds, _SOP_CLASS), _uid(ds, _SOP_INSTANCE)
    if not found_class or not found_instance:
        return Verdict(DOES_NOT_MATCH_SOP_CLASS, "SOP Class or Instance UID missing")
    if not is_valid_uid(found_class) or not is_valid_uid(found_instance):
        return Verdict(DOES_NOT_MATCH_SOP_CLASS, "SOP Class or Instance UID malformed")
    if found_class != sop_class_uid:
        return Verdict(DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the request")
    if found_instance != sop_instance_uid:
        return Verdict(DOES_NOT_MATCH_SOP_CLASS, "SOP Instance UID differs from the request")
    try:
        nesting = sequences_problem(ds, max_depth)
    except RecursionError:
        nesting = "sequence nesting too deep"
    if nesting is not None:
        return Verdict(CANNOT_UNDERSTAND, nesting)
    pixels = image_pixels_problem(ds, found_class)
    if pixels is not None:
        return Verdict(DOES_NOT_MATCH_SOP_CLASS, pixels)
    return None
