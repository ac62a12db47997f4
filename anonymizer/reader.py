"""Reading the source without changing it, and collecting its identifiers.

The walk (:mod:`anonymizer.engine`) reads the source through a
:class:`Reader`: an element is converted only when its value must be
inspected, and the converted element is cached here, never stored back into
the source. Before the walk, :meth:`Reader.collect` gathers the instance's
own identifiers (see :mod:`anonymizer.identifiers`) from every depth.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from pydicom.datadict import dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from . import memo
from .actions import Action
from .errors import AnonymizationError
from .layout import Shape, shape
from .profile import Option, Profile
from .streams import streamed
from .tags import (
    CACHED_VALUE_BYTES,
    COLLECT_KINDS,
    OVERLAY_DATA,
    Element,
    check_complete,
    vr_of,
)
from .values import ASCII_VRS, as_strings, fast_codec, split

__all__ = ["Reader"]

_VALUE = attrgetter("value")


def _tables(profile: Profile) -> tuple[bool, bool, dict[int, tuple[str, str]]]:
    """What a walk reads from ``profile``, derived once per profile."""
    return (
        Option.RETAIN_SAFE_PRIVATE in profile.options,
        profile.action_for(OVERLAY_DATA) is Action.REMOVE,
        {tag: (dictionary_keyword(tag), kind) for tag, kind in COLLECT_KINDS.items()
         if profile.action_for(tag) is not Action.KEEP},
    )


class Reader:
    """Reads one source dataset (and its sequence items) for one de-identification.

    Parameters
    ----------
    profile : Profile
        The resolved actions; its caches are shared by every instance.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._converted: dict[tuple[int, int], DataElement] = {}
        self._codecs: dict[int, tuple[str | None, Hashable]] = {}
        self._shapes: dict[int, Shape] = {}
        self._keys: dict[int, list[BaseTag]] = {}
        self._cache = profile.value_cache
        self._recent: dict[Hashable, Any] = profile.derived.setdefault("recent", {})
        tables = profile.derived.get("walk")
        if tables is None:
            tables = profile.derived["walk"] = _tables(profile)
        self._keep_private: bool = tables[0]
        self._overlay_gone: bool = tables[1]
        #: identifier attributes the options do not keep -> (keyword, kind)
        self._kinds: dict[int, tuple[str, str]] = tables[2]

    def element(self, src: Dataset, tag: int) -> DataElement:
        """The converted element at ``tag`` of ``src`` (cached, ``src`` untouched)."""
        key = (id(src), tag)
        found = self._converted.get(key)
        if found is None:
            raw = src.get_item(BaseTag(tag))
            if isinstance(raw, DataElement):
                found = raw
            else:
                try:
                    found = convert_raw_data_element(raw, encoding=src._character_set, ds=src)
                except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
                    raise AnonymizationError(
                        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) cannot be decoded: "
                        f"{type(exc).__name__}"
                    ) from None
            self._converted[key] = found
        return found

    def _deferred(self, src: Dataset, elem: Element) -> Element:
        """A kept value pydicom deferred: streamed from the source file (see .streams)."""
        path = getattr(src, "filename", None)
        if isinstance(elem, RawDataElement) and isinstance(path, str) and elem.length != 0xFFFFFFFF:
            return streamed(elem, path)
        return src.get_item(elem.tag)

    def strings(self, src: Dataset, tag: int, elem: Element, vr: str) -> list[str]:
        """The values of a string element, decoded the cheapest correct way."""
        value = elem.value
        if vr in ASCII_VRS and isinstance(elem, RawDataElement) and isinstance(value, bytes):
            return split(value.decode("latin-1"), vr)
        return as_strings(elem, vr, self.codec(src), lambda: self.element(src, tag))

    def texts(
        self, src: Dataset, wanted: Iterable[tuple[int, str]], copy: Dataset | None = None,
    ) -> list[str]:
        """The values of ``src``'s top-level attributes (tag, VR) as text ('' when absent).

        With ``copy``, the values the attributes have in ``copy`` (the
        de-identified dataset made from ``src``, whose elements are keyed by
        the very tags of ``src``'s: found without comparing tags).
        """
        key = id(src)
        keys = self._keys.get(key)
        if keys is None:
            keys = self._keys[key] = list(src._dict)
        positions = self.shape(src).positions
        within = src if copy is None else copy
        elements = within._dict
        found = []
        for tag, vr in wanted:
            position = positions.get(tag)
            if position is None:
                elem = None if copy is None else elements.get(BaseTag(tag))
            else:
                elem = elements.get(keys[position])
            found.append("" if elem is None else "\\".join(self.strings(within, tag, elem, vr)))
        return found

    def codec(self, src: Dataset) -> str | None:
        """The codec for ``src``'s text (its character set is looked up once per dataset)."""
        return self._text_form(src)[0]

    def _text_form(self, src: Dataset) -> tuple[str | None, Hashable]:
        """The codec for ``src``'s text, and what its text decodes by: the codec, or else
        the character set pydicom decodes with (for keys of shared results)."""
        key = id(src)
        found = self._codecs.get(key)
        if found is None:
            charset = src._character_set
            codec = fast_codec(charset)
            found = self._codecs[key] = (
                codec, codec or (charset if isinstance(charset, str) else tuple(charset))
            )
        return found

    def collect(self, src: Dataset, depth: int = 0) -> Sequence[tuple[str, str, str]]:
        """Walk the source once for its identifiers, checking depth and truncation.

        Returns the (keyword, kind, value) of each identifier. Only the
        identifier attributes and the sequences are visited (their
        positions are known from the layout, see :mod:`anonymizer.layout`). pydicom accepts a
        value cut short by the end of the file; since only the last element
        read can be cut short, that one is checked, and a truncated instance
        is refused instead of being stored with part of its data.
        """
        if depth > self.profile.max_sequence_depth:
            raise AnonymizationError(
                f"sequence nesting deeper than {self.profile.max_sequence_depth}"
            )
        if depth == 0 and src._dict:
            *_, last = src._dict.values()  # the last element read
            check_complete(last)
        found: list[tuple[str, str, str]] = []
        cache = self._cache
        text_form = self._text_form(src)[1]
        form = self.shape(src)
        elements = list(src._dict.values())
        # the values collect reads; the same as the last instance's: the same identifiers
        read = list(map(elements.__getitem__, form.collected))
        values, classes = list(map(_VALUE, read)), list(map(type, read))
        recent_key = ("collect", src.original_encoding, text_form, depth)
        recent = memo.recall(self._recent, form, recent_key)
        if recent is not None and recent[0] == values and recent[1] == classes:
            found_before: tuple[tuple[str, str, str], ...] = recent[2]
            return found_before  # the very tuple each time: its matcher is found by identity
        shared = True  # every value read is one the cache keys by
        for position, tag, keyword, kind in form.identifiers:
            raw = elements[position]
            value = raw.value
            if isinstance(raw, RawDataElement) and isinstance(value, bytes) \
                    and len(value) <= CACHED_VALUE_BYTES:  # a series repeats them
                known = ("identifiers", tag, raw.VR, value, text_form)
                hit = cache.get(known)
                if hit is None:
                    hit = self._identifiers(src, tag, raw, keyword, kind)
                    memo.remember(cache, known, hit)
                found += hit
            else:
                shared = False
                found += self._identifiers(src, tag, raw, keyword, kind)
        for position in form.sequences:
            raw = elements[position]
            key: Hashable = None
            if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) \
                    and len(raw.value) <= CACHED_VALUE_BYTES:  # a series repeats them
                key = ("sequence", raw.value, raw.is_implicit_VR, raw.is_little_endian,
                       text_form, depth)
                hit = cache.get(key)
                if hit is not None:
                    found += hit
                    continue
            shared = shared and key is not None
            inner: list[tuple[str, str, str]] = []
            for item in self.element(src, form.tags[position]).value or ():
                inner += self.collect(item, depth + 1)
            if key is not None:
                memo.remember(cache, key, tuple(inner))
            found += inner
        if shared and sum(map(len, values)) <= memo.RECENT_BYTES:
            memo.keep(self._recent, form, recent_key, (values, classes, tuple(found)))
        return found

    def shape(self, src: Dataset) -> Shape:
        """What the engine knows of ``src``'s layout (looked up once per dataset)."""
        key = id(src)
        found = self._shapes.get(key)
        if found is None:
            self._text_form(src)  # reads the character set: its element is converted first
            found = self._shapes[key] = shape(
                self.profile, self._kinds, self._keep_private, src._dict
            )
        return found

    def _identifiers(
        self, src: Dataset, tag: int, raw: Element, keyword: str, kind: str,
    ) -> tuple[tuple[str, str, str], ...]:
        vr = "PN" if kind == "name" else vr_of(tag, raw)
        return tuple((keyword, kind, v) for v in self.strings(src, tag, raw, vr))
