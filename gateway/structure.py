"""Checks of a received dataset's structure that its header parse does not make.

:func:`gateway.receive.check_received` parses the top level only (values over
1 KB stay on disk). Two things can still be wrong below it, and both are
checked before the bytes are acknowledged (RELIABILITY I1, T14-T17):

- sequences (PS3.5 7.5): nested deeper than the configured limit (DCMTK's
  is 64), or holding an item whose element claims more bytes than the item
  has. The walk keeps its own stack, so no depth costs Python recursion;
  pydicom parses a defined-length item only when it is reached, and an
  undefined-length nesting too deep for pydicom's reader has already been
  refused as a ``RecursionError`` when the header was read;
- an image's pixel data (PS3.3 C.7.6.3, Image Pixel Module): an image SOP
  class must carry Pixel Data (7FE0,0010) that is not empty; Rows, Columns,
  Samples per Pixel and Bits Allocated are within their VR's range (US,
  1-65535: a Rows sent as UL 0xFFFFFFFF is refused, not multiplied out) and
  Number of Frames within IS's (PS3.5 Table 6.2-1); uncompressed pixel data
  holds at least what they say (pydicom's ``get_expected_length``), so
  nothing downstream reads past its end. The policy is to refuse with
  0xA900 ("dataset does not match SOP class", PS3.4 B.2.3): the sender
  learns at once, nothing is stored to be found broken later. Pixel data
  longer than the header says is accepted: frames are located by the
  header, the extra bytes are never read.

Each check returns a reason for the Error Comment (a rule, never a value) or
None.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

__all__ = ["image_pixels_problem", "sequences_problem"]

_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_US_RANGE = range(1, 65536)
_IS_RANGE = range(1, 2**31)


def _is_sequence(tag: int, elem: DataElement | RawDataElement) -> bool:
    vr = elem.VR
    if vr is None:  # implicit VR: the dictionary's, or a private element of undefined length
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return elem.length == _UNDEFINED if isinstance(elem, RawDataElement) else False
    return str(vr) == "SQ"


def _cut_short(elem: DataElement | RawDataElement) -> bool:
    if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED:
        return False
    return elem.value is not None and len(elem.value) < elem.length


def sequences_problem(ds: Dataset, max_depth: int) -> str | None:
    """Why the sequences of ``ds`` cannot be accepted, or None.

    The items of a top-level sequence are at depth 1; an item deeper than
    ``max_depth`` is refused, as is an element inside an item that claims
    more bytes than its item holds.
    """
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for tag in list(current.keys()):
            elem = current.get_item(tag)
            if depth and _cut_short(elem):
                return "dataset cannot be parsed"
            if tag == _PIXEL_DATA or not _is_sequence(tag, elem):
                continue
            try:
                items = current[tag].value
            except Exception:  # pydicom raises many types on broken items
                return "dataset cannot be parsed"
            if items and depth + 1 > max_depth:
                return "sequence nesting too deep"
            stack.extend((child, depth + 1) for child in items)
    return None


def _length(elem: DataElement | RawDataElement) -> int:
    if isinstance(elem, RawDataElement):
        return int(elem.length)
    return _UNDEFINED if elem.is_undefined_length else len(elem.value or b"")


def _is_image_class(sop_class_uid: str) -> bool:
    return "Image Storage" in UID(sop_class_uid).name


def _header_int(ds: Dataset, keyword: str, allowed: range, default: int | None = None
                ) -> int | None:
    value = ds.get(keyword, default)
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and number in allowed else None


def image_pixels_problem(ds: Dataset, sop_class_uid: str) -> str | None:
    """Why the pixel data of ``ds`` does not match its image header, or None (see above)."""
    pixels = ds.get_item(_PIXEL_DATA) if _PIXEL_DATA in ds else None
    if pixels is None:
        return "Pixel Data missing" if _is_image_class(sop_class_uid) else None
    length = _length(pixels)
    if length == 0:
        return "Pixel Data empty"
    try:
        header = [_header_int(ds, k, _US_RANGE)
                  for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")]
        header.append(_header_int(ds, "NumberOfFrames", _IS_RANGE, default=1))
    except Exception:  # an element of a VR pydicom cannot convert
        return "image header cannot be parsed"
    if None in header:
        return "image header values missing or out of range"
    if length == _UNDEFINED or ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return None  # compressed: fragments, decoded (bounds-checked) by their codec
    try:
        expected = get_expected_length(ds, unit="bytes")
    except Exception:  # e.g. a Photometric Interpretation pydicom does not know
        return "image header values missing or out of range"
    if length < expected:
        return "Pixel Data shorter than the image header says"
    return None
