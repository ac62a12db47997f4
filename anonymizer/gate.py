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

from collections.abc import Hashable, Mapping, MutableMapping, Set

from pydicom.charset import decode_bytes
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

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


def _name(tag: int) -> str:
    keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + keyword if keyword else ''}"


def _vr(tag: int, elem: DataElement | RawDataElement) -> str:
    if elem.VR:
        return str(elem.VR)
    if dictionary_has_tag(tag):
        return str(dictionary_VR(tag))
    return "UN"


def _text(elem: DataElement | RawDataElement, ds: Dataset, codec: str | None) -> str:
    value = elem.value
    if isinstance(value, bytes):
        if isinstance(elem, RawDataElement) and elem.VR not in (None, "UN", "OB"):
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
    ds: Dataset, path: str, found: list[tuple[str, int, str]], generated: Set[int],
    verified: Mapping[Hashable, object], fresh: list[Hashable], pattern: Hashable,
) -> None:
    """Append ``(path to ds, tag, text)`` for every scanned value of ``ds``, at every depth.

    ``generated`` holds ``id()`` of the elements the engine made itself
    (pseudonyms, new UIDs, dummies, shifted dates): no input reached them. A
    sequence kept byte for byte that an earlier check found clean of the
    same identifiers (``verified``) is not scanned again; the ones scanned
    now are added to ``fresh``.
    """
    codec = fast_codec(ds._character_set)
    for base_tag, elem in ds._dict.items():
        tag = int(base_tag)
        if tag in _OWN_MARKS or id(elem) in generated:
            continue
        vr = _vr(tag, elem)
        if vr == "SQ":
            if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) \
                    and len(elem.value) <= CACHED_VALUE_BYTES:
                key = ("gate", elem.value, elem.is_implicit_VR, pattern)
                if key in verified:
                    continue
                fresh.append(key)
            for index, item in enumerate(ds[base_tag].value or ()):
                _texts(item, f"{path}{_name(tag)}[{index}].", found, generated, verified, fresh,
                       pattern)
            continue
        if vr in _BINARY_VRS:
            value = elem.value
            if (tag in _BULK_TAGS or tag >> 16 & 0xFF01 == 0x6000
                    or not isinstance(value, bytes) or len(value) > _MAX_SCANNED_BINARY):
                continue
        elif vr not in _SCAN_VRS:
            continue
        found.append((path, tag, _text(elem, ds, codec)))


def check(
    ds: Dataset,
    identifiers: Identifiers,
    generated: Set[int] = frozenset(),
    verified: MutableMapping[Hashable, object] | None = None,
) -> None:
    """Raise :class:`ResidualPHIError` if any identifier occurs in ``ds``.

    All scanned values are searched at once (joined by NUL, which no
    identifier spans); only on a hit is the attribute that holds it found.

    Parameters
    ----------
    ds : Dataset
        The de-identified dataset (raw and converted elements alike).
    identifiers : Identifiers
        The original instance's identifiers.
    generated : set of int
        ``id()`` of elements the engine generated, which are not scanned.
    verified : mutable mapping, optional
        Remembers kept sequences found clean, keyed by their bytes and the
        identifiers, so a series' repeated sequences are scanned once.
    """
    if identifiers.pattern is None:
        return
    texts: list[tuple[str, int, str]] = []
    fresh: list[Hashable] = []
    memo: MutableMapping[Hashable, object] = {} if verified is None else verified
    _texts(ds, "", texts, generated, memo, fresh, identifiers.pattern)
    if identifiers.first_hit("\0".join(text for _, _, text in texts)) is None:
        for key in fresh:
            memo[key] = True
        return
    for path, tag, text in sorted(texts):
        hit = identifiers.first_hit(text)
        if hit is not None:
            raise ResidualPHIError(
                f"residual identifier ({hit} of the original) in {path}{_name(tag)}"
            )
