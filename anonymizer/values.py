"""Reading element values cheaply, without changing the dataset they belong to.

A value the engine only inspects (a UID to replace, a date to shift, a text
to clean) is decoded straight from the element's raw bytes when its VR is
ASCII by definition (PS3.5 6.2: DA, DT, TM, UI, CS, AS, DS, IS) or when the
dataset's character set is the default repertoire, Latin-1 or UTF-8.
Anything else goes through pydicom's own conversion, which handles ISO 2022
escapes and the multi-byte sets. Either way the source dataset is left as it
was: converted elements are cached by the caller, never stored back.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

__all__ = [
    "ASCII_VRS", "SINGLE_VALUED_TEXT_VRS", "as_strings", "encode", "encode_sequence", "fast_codec",
    "split",
]

#: VRs whose values are ASCII whatever the character set
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
#: VRs whose value is one text, backslash included (PS3.5 6.2)
SINGLE_VALUED_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})

_LATIN1 = {"iso8859", "latin_1", "iso_ir_100", "iso8859_1"}
_UTF8 = {"UTF8", "utf_8", "utf8"}


def fast_codec(encodings: str | list[str]) -> str | None:
    """The Python codec to decode text with, or None when pydicom must do it."""
    names = {encodings} if isinstance(encodings, str) else set(encodings)
    if not names or names <= _LATIN1:
        return "latin-1"
    if names <= _UTF8:
        return "utf-8"
    return None


def split(text: str, vr: str) -> list[str]:
    """The values of a decoded string element (one for the single-valued text VRs)."""
    text = text.rstrip(" \0") if vr != "UI" else text.rstrip("\0 ")
    if not text:
        return []
    if vr in SINGLE_VALUED_TEXT_VRS:
        return [text]
    return [v.strip(" \0") for v in text.split("\\")]


def as_strings(
    elem: DataElement | RawDataElement,
    vr: str,
    codec: str | None,
    convert: Callable[[], DataElement],
) -> list[str]:
    """The values of a string element as Python strings.

    Parameters
    ----------
    elem : DataElement or RawDataElement
        The element as stored in its dataset.
    vr : str
        Its VR.
    codec : str or None
        :func:`fast_codec` of the dataset's character set.
    convert : callable
        Returns the converted element when the fast path does not apply.
    """
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        if vr in ASCII_VRS:
            return split(elem.value.decode("latin-1"), vr)
        if codec is not None:
            return split(elem.value.decode(codec, "replace"), vr)
    value = convert().value
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def encode(
    tag: int,
    vr: str,
    values: list[str],
    encoding: tuple[bool | None, bool | None],
    codec: str | None,
) -> RawDataElement | None:
    """Encode string values as a raw element in the dataset's own encoding.

    The engine only writes values it made itself (UIDs, dates, dummies,
    pseudonyms, text with identifiers cut out of a valid value), so they need
    none of pydicom's per-element conversion and checks. Returns None when
    the dataset has no encoding of its own (built in memory) or its
    character set needs pydicom: the caller then makes a DataElement.
    """
    implicit, little = encoding
    if implicit is None or little is None or codec is None:
        return None
    text = values[0] if vr in SINGLE_VALUED_TEXT_VRS and values else "\\".join(values)
    data = text.encode("ascii" if vr in ASCII_VRS else codec)
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(
        BaseTag(tag), None if implicit else vr, len(data), data, 0, implicit, little
    )


def encode_sequence(elem: DataElement, src: Dataset) -> RawDataElement | None:
    """A sequence element encoded as a raw element in ``src``'s encoding (None when unknown)."""
    implicit, little = src.original_encoding
    if implicit is None or little is None:
        return None
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_sequence(buffer, elem, convert_encodings(src._character_set))
    data = buffer.getvalue()
    return RawDataElement(
        BaseTag(elem.tag), None if implicit else "SQ", len(data), data, 0, implicit, little
    )
