"""The residual-PHI gate: after de-identification, look for the instance's own identifiers.

Table E.1-1 and the cleaning of descriptors catch what they know about; the
gate checks the result. Every remaining text value is scanned, private or
not, at every depth: the text VRs, person names, code strings, and values
of unknown VR (private data is often UN). Code strings count because a
device can write a name into one; a patient whose name is also a code word
(HEAD) is then held for review rather than risked. Numbers, dates, UIDs and
binary data are not text a person writes into, and pixel data is never
decoded. A hit fails the instance with the path of the attribute and the kind of
identifier, never the value itself.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Iterator, Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from operator import attrgetter
from typing import Any

from pydicom.charset import decode_bytes
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from . import memo
from .errors import ResidualPHIError
from .identifiers import Identifiers
from .tags import CACHED_VALUE_BYTES
from .values import fast_codec

__all__ = ["check"]

_SCAN_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN"})
_BINARY_VRS = frozenset({"OB", "OW", "UN"})
#: bulk data: images, waveforms, lookup tables, overlays and documents under review
_BULK_TAGS = frozenset(
    {0x7FE00008, 0x7FE00009, 0x7FE00010, 0x54001010, 0x56000020, 0x00283006, 0x00281201,
     0x00281202, 0x00281203, 0x00281221, 0x00281222, 0x00281223, 0x00420011}
)
#: the engine's own constant marks (DeidentificationMethodCodeSequence): nothing to scan
_OWN_MARKS = frozenset({0x00120064})
#: binary values longer than this are bulk data, not text
_MAX_SCANNED_BINARY = 65536
#: raw values of these VRs are read as Latin-1, whatever the character set
_UNDECODED = (None, "UN", "OB")
#: what the gate does with an element: look into a sequence, scan small binary data or text
_SEQUENCE, _BINARY, _TEXT = "sequence", "binary", "text"
_Scan = tuple[int, int, str, bool]
_PLANS: dict[tuple[bytes, tuple[str | None, ...]], tuple[_Scan, ...]] = {}
#: plans remembered before starting afresh, and the largest dataset whose plan is remembered
_REMEMBERED, _LARGEST = 256, 2048
_VR = attrgetter("VR")


def _name(tag: int) -> str:
    keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + keyword if keyword else ''}"


def _vr(tag: int, read_vr: str | None) -> str:
    if read_vr:
        return str(read_vr)
    if dictionary_has_tag(tag):
        return str(dictionary_VR(tag))
    return "UN"


def _text(elem: DataElement | RawDataElement, ds: Dataset, codec: str | None) -> str:
    value = elem.value
    if isinstance(value, bytes):
        if isinstance(elem, RawDataElement) and elem.VR not in _UNDECODED:
            if codec is not None:
                return value.decode(codec, "replace")
            encodings = ds._character_set
            codecs = [encodings] if isinstance(encodings, str) else list(encodings)
            return decode_bytes(value, codecs or ["iso8859"], set())
        return value.decode("latin-1")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _texts(
    ds: Dataset, path: str, found: list[tuple[str, int, str]], generated: AbstractSet[int],
    verified: MutableMapping[Hashable, Any], fresh: list[Hashable], pattern: Hashable,
) -> None:
    """Append ``(path to ds, tag, text)`` for every scanned value of ``ds``, at every depth.

    ``generated`` holds ``id()`` of the elements the engine made itself
    (pseudonyms, new UIDs, dummies, shifted dates): no input reached them. A
    value (or a sequence kept byte for byte) that an earlier check found
    clean of the same identifiers, decoded the same way (``verified``), is
    not scanned again; the keys of the ones scanned now are added to
    ``fresh``.
    """
    charset = ds._character_set
    codec = fast_codec(charset)
    decoding = codec or (charset if isinstance(charset, str) else tuple(charset))
    scope = memo.scope(verified, ("gate", memo.number(verified, pattern), decoding))
    elements = ds._dict
    values = list(elements.values())
    for position, tag, kind, undecoded in _plan(elements):
        elem = values[position]
        if id(elem) in generated:
            continue
        value = elem.value
        shared = isinstance(value, bytes) and isinstance(elem, RawDataElement) \
            and len(value) <= CACHED_VALUE_BYTES
        if kind is _TEXT:
            if shared:  # the same bytes decode to the same text here as they did before
                key: Hashable = ("clean", scope, undecoded, value)
                if key in verified:
                    continue
                fresh.append(key)
            found.append((path, tag, _text(elem, ds, codec)))
        elif kind is _SEQUENCE:
            if shared and isinstance(elem, RawDataElement):
                key = ("gate", scope, value, elem.is_implicit_VR, elem.is_little_endian)
                if key in verified:
                    continue
                fresh.append(key)
            for index, item in enumerate(ds[tag].value or ()):
                _texts(item, f"{path}{_name(tag)}[{index}].", found, generated, verified, fresh,
                       pattern)
        elif isinstance(value, bytes) and len(value) <= _MAX_SCANNED_BINARY:  # small binary data
            if shared:
                key = ("clean", scope, undecoded, value)
                if key in verified:
                    continue
                fresh.append(key)
            found.append((path, tag, _text(elem, ds, codec)))


def _plan(elements: Mapping[BaseTag, DataElement | RawDataElement]) -> tuple[_Scan, ...]:
    """(position, tag, kind, read as Latin-1) of the elements the gate looks into.

    Whether an element is scanned depends on its tag and VR only, so this is
    decided once per layout (tags and VRs in their order, see
    :mod:`anonymizer.layout`).
    """
    tags = array("L", elements)
    vrs = tuple(map(_VR, elements.values()))
    key = (tags.tobytes(), vrs)
    found = _PLANS.get(key)
    if found is None:
        found = tuple(_scans(tags, vrs))
        if len(tags) <= _LARGEST:
            if len(_PLANS) >= _REMEMBERED:
                _PLANS.clear()
            _PLANS[key] = found
    return found


def _scans(tags: array[int], vrs: tuple[str | None, ...]) -> Iterator[_Scan]:
    for position, (tag, read_vr) in enumerate(zip(tags, vrs)):
        if tag in _OWN_MARKS:
            continue
        vr = _vr(tag, read_vr)
        undecoded = read_vr in _UNDECODED  # how _text decodes a raw value
        if vr == "SQ":
            yield position, tag, _SEQUENCE, undecoded
        elif vr in _BINARY_VRS:
            if not (tag in _BULK_TAGS or tag >> 16 & 0xFF01 == 0x6000):
                yield position, tag, _BINARY, undecoded
        elif vr in _SCAN_VRS:
            yield position, tag, _TEXT, undecoded


def check(
    ds: Dataset,
    identifiers: Identifiers,
    generated: AbstractSet[int] = frozenset(),
    verified: MutableMapping[Hashable, Any] | None = None,
) -> None:
    """Raise :class:`ResidualPHIError` if any identifier occurs in ``ds``.

    All scanned values are searched at once (joined by NUL, which no
    identifier spans); only on a hit is the attribute that holds it found.
    Whether a value holds an identifier depends only on its text and the
    identifiers, so a value found clean is remembered and not searched again.

    Parameters
    ----------
    ds : Dataset
        The de-identified dataset (raw and converted elements alike).
    identifiers : Identifiers
        The original instance's identifiers.
    generated : set of int
        ``id()`` of elements the engine generated, which are not scanned.
    verified : mutable mapping, optional
        Remembers values and kept sequences found clean, keyed by their
        bytes, how they decode and the identifiers, so that what a series
        repeats is scanned once (``Profile.value_cache``, see
        :mod:`anonymizer.memo`).
    """
    if identifiers.pattern is None:
        return
    texts: list[tuple[str, int, str]] = []
    fresh: list[Hashable] = []
    known: MutableMapping[Hashable, Any] = {} if verified is None else verified
    _texts(ds, "", texts, generated, known, fresh, identifiers.pattern)
    if identifiers.first_hit("\0".join(text for _, _, text in texts)) is None:
        for key in fresh:
            memo.remember(known, key, True)
        return
    for path, tag, text in sorted(texts):
        hit = identifiers.first_hit(text)
        if hit is not None:
            raise ResidualPHIError(
                f"residual identifier ({hit} of the original) in {path}{_name(tag)}"
            )
