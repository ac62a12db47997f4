"""The de-identification walk: every element at every depth, one action each.

Rules followed:

- PS3.15 E.1 (Basic Application Level Confidentiality Profile) and E.3 (its
  options): each attribute of Table E.1-1 gets the action that
  :class:`~anonymizer.profile.Profile` resolved for it; combined codes as in
  :mod:`anonymizer.actions`.
- Attributes the table does not list (see :mod:`anonymizer.allowlist`):
  sequences are walked, UIDs replaced unless well-known, person names get a
  dummy, dates follow the date options, codes and numbers are kept, other
  text is cleaned unless allow-listed, and an unknown public tag is removed.
  Inside a sequence whose action is D (a dummy content, e.g. ContentSequence
  without Clean Structured Content) that text gets a dummy instead.
- Private attributes (PS3.15 E.3.10): removed, with their creators, unless
  Retain Safe Private is chosen and their block's creator is configured as
  safe; kept private text is still cleaned and scanned.
- Repeating groups: the whole overlay group 60xx goes when its
  OverlayData (60xx,3000) is removed, so no overlay module is left half.
- PatientName and PatientID take the patient's pseudonym; dates move by the
  patient's offset (:mod:`anonymizer.dates`).

The walk reads the source without converting elements it only copies: their
raw bytes pass through to the output unchanged (pixel data is never decoded,
whatever the transfer syntax). The source is never modified; ``Dataset.walk``
is not used because it converts every element and edits in place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from pydicom.datadict import dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from . import dates
from .actions import Action
from .dummies import dummy_value
from .errors import AnonymizationError
from .identifiers import Identifiers
from .profile import Option, Profile
from .pseudonyms import Pseudonym, PseudonymLookup
from .tags import (
    COLLECT_KINDS,
    DATE_TIME_PARTNERS,
    DATE_VRS,
    ENCAPSULATED_DOCUMENT,
    OVERLAY_DATA,
    PATIENT_ID,
    PATIENT_NAME,
    SQ_TAGS,
    STRING_VRS,
    TEXT_VRS,
    CACHED_VALUE_BYTES,
    VALUE_CACHE_LIMIT,
    Element,
    check_complete,
    one_or_many,
    shift_pair,
    unchanged,
    unlisted_action,
    vr_of,
)
from .streams import streamed
from .values import as_strings, encode, encode_sequence, fast_codec

__all__ = ["Walker"]

class Walker:
    """One de-identification of one dataset; holds what it learned on the way.

    Parameters
    ----------
    profile : Profile
        The resolved actions.
    lookup : PseudonymLookup
        Pseudonyms and UID replacements (one pseudonym space).
    """

    def __init__(self, profile: Profile, lookup: PseudonymLookup) -> None:
        self.profile = profile
        self.lookup = lookup
        self.counts: Counter[str] = Counter()
        self.uid_map: dict[str, str] = {}
        self.review: list[str] = []
        self.identifiers = Identifiers({}, None)
        self.pseudonym: Pseudonym | None = None
        self._converted: dict[tuple[int, int], DataElement] = {}
        self._codecs: dict[int, str | None] = {}
        self._shifted: dict[tuple[str, str], str] = {}
        #: id() of the raw elements the engine made itself, for the gate
        self.generated: set[int] = set()
        #: what an action's result depends on beside the value: set once the patient is known
        self.context: Hashable = None
        self._new_uids: list[tuple[str, str]] = []
        self._keep_private = Option.RETAIN_SAFE_PRIVATE in profile.options
        self._overlay_gone = profile.action_for(OVERLAY_DATA) is Action.REMOVE
        self._plan = profile.plan_cache
        #: set for an encapsulated-document instance: its document is kept for review
        self.keep_document = False

    # -- reading the source without changing it ------------------------------
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
        return as_strings(elem, vr, self._codec(src), lambda: self.element(src, tag))

    def _codec(self, src: Dataset) -> str | None:
        """The codec for ``src``'s text (its character set is looked up once per dataset)."""
        key = id(src)
        if key not in self._codecs:
            self._codecs[key] = fast_codec(src._character_set)
        return self._codecs[key]

    def collect(self, src: Dataset, depth: int = 0) -> list[tuple[str, str, str]]:
        """Walk the source once for its identifiers, checking depth and truncation.

        Only the identifier attributes and the sequences are visited (set
        intersections, not a loop over every element). pydicom accepts a
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
        present = src._dict.keys()
        for base_tag in present & COLLECT_KINDS.keys():
            tag = int(base_tag)
            if self.profile.action_for(tag) is Action.KEEP:
                continue
            kind = COLLECT_KINDS[tag]
            raw = src._dict[base_tag]
            vr = "PN" if kind == "name" else vr_of(tag, raw)
            keyword = dictionary_keyword(tag)
            found += [(keyword, kind, v) for v in self.strings(src, tag, raw, vr)]
        keep_private = self._keep_private
        sequences = [
            t for t, e in src._dict.items()
            if (e.VR == "SQ" or e.VR is None and t in SQ_TAGS) and (keep_private or not t >> 16 & 1)
        ]
        cache = self.profile.value_cache
        for base_tag in sequences:
            raw = src._dict[base_tag]
            key: Hashable = None
            if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) \
                    and len(raw.value) <= CACHED_VALUE_BYTES:  # a series repeats them
                key = ("sequence", raw.value, raw.is_implicit_VR, raw.is_little_endian,
                       self._codec(src), depth)
                hit = cache.get(key)
                if hit is not None:
                    found += hit[0]
                    continue
            inner: list[tuple[str, str, str]] = []
            for item in self.element(src, int(base_tag)).value or ():
                inner += self.collect(item, depth + 1)
            if key is not None:
                if len(cache) >= VALUE_CACHE_LIMIT:
                    cache.clear()
                cache[key] = (inner, ())
            found += inner
        return found

    # -- the walk ----------------------------------------------------------
    def dataset(self, src: Dataset, depth: int, strict: bool) -> Dataset:
        """Return the de-identified copy of ``src`` (a dataset or sequence item).

        ``strict`` is set inside a sequence whose action is D: unlisted text
        there gets a dummy instead of being cleaned.
        """
        out = Dataset()
        implicit, little = src.original_encoding
        out.set_original_encoding(implicit, little, src.original_character_set)
        out._parent_encoding = src._parent_encoding
        creators = self._safe_private_blocks(src) if self._keep_private else set()
        pairs = self._date_time_pairs(src) if self.profile.shifts_dates else {}
        plan = self._plan
        counts = self.counts
        for base_tag, elem in src._dict.items():
            tag = int(base_tag)
            group, number = tag >> 16, tag & 0xFFFF
            if number == 0 or group <= 2:  # group lengths, command and meta elements
                counts["X"] += 1
                continue
            if group & 1:
                self._private(src, out, tag, elem, creators, depth)
                continue
            key = (tag, elem.VR, strict)
            decided = plan.get(key)
            if decided is None:
                decided = plan[key] = self._decide(tag, elem, strict)
            vr, action, code = decided
            counts[code] += 1
            if action is Action.REMOVE:
                continue
            if action is Action.KEEP and vr != "SQ":
                out._dict[base_tag] = elem if elem.value is not None else self._deferred(src, elem)
                continue
            if depth == 0 and tag in (PATIENT_NAME, PATIENT_ID):
                continue  # written from the pseudonym by the caller
            if tag == ENCAPSULATED_DOCUMENT and depth == 0 and self.keep_document:
                self.review.append("encapsulated document: its content cannot be de-identified")
                out[base_tag] = src.get_item(base_tag)
                continue
            self._apply(src, out, tag, elem, vr, action, depth, strict, pairs)
        return out

    def _decide(self, tag: int, elem: Element, strict: bool) -> tuple[str, Action, str]:
        vr = vr_of(tag, elem)
        action = self.profile.action_for(tag)
        if self._overlay_gone and tag >> 16 & 0xFF01 == 0x6000:
            action = Action.REMOVE
        if action is None:
            action = unlisted_action(self.profile, tag, vr, strict)
        return vr, action, action.value

    def _apply(
        self, src: Dataset, out: Dataset, tag: int, elem: Element, vr: str, action: Action,
        depth: int, strict: bool, pairs: dict[int, str],
    ) -> None:
        """Apply ``action``; a value met before in this patient's context reuses its result.

        A series repeats most values, and an action's result depends only on
        the value, the action, the encoding, the position and the patient's
        identifiers and pseudonym. Results are immutable raw elements, shared
        between outputs through ``Profile.value_cache``.
        """
        if tag in pairs or not isinstance(elem, RawDataElement) \
                or not isinstance(elem.value, bytes) or len(elem.value) > CACHED_VALUE_BYTES:
            self._apply_uncached(src, out, tag, elem, vr, action, depth, strict, pairs)
            return
        key = (tag, vr, action, elem.value, src.original_encoding, self._codec(src),
               self.context, strict, depth)
        cache = self.profile.value_cache
        hit = cache.get(key)
        base_tag = BaseTag(tag)
        if hit is not None:
            produced, uids, counted, generated = hit
            out._dict[base_tag] = elem if produced is None else produced
            if generated:
                self.generated.add(id(produced))
            self.uid_map.update(uids)
            self._new_uids.extend(uids)
            self.counts.update(counted)  # what the elements inside a sequence counted
            return
        outer, self._new_uids = self._new_uids, []
        before = Counter(self.counts)
        self._apply_uncached(src, out, tag, elem, vr, action, depth, strict, pairs)
        mine, self._new_uids = tuple(self._new_uids), outer
        outer.extend(mine)
        made = out._dict.get(base_tag)
        counted = self.counts - before
        if made is elem:
            result: tuple[Element | None, tuple[tuple[str, str], ...], Counter[str], bool] = (
                None, mine, counted, False)
        elif isinstance(made, RawDataElement) and id(made) in self.generated:
            result = (made, mine, counted, True)
        elif isinstance(made, DataElement) and made.VR == "SQ":
            # a rebuilt sequence, encoded once so the next instance can share it; the
            # gate scans it (its content came partly from the input)
            encoded = encode_sequence(made, src)
            if encoded is None:
                return
            out._dict[base_tag] = encoded
            result = (encoded, mine, counted, False)
        else:
            return  # removed, or made by pydicom: not worth keeping
        if len(cache) >= VALUE_CACHE_LIMIT:
            cache.clear()
        cache[key] = result

    def _apply_uncached(
        self, src: Dataset, out: Dataset, tag: int, elem: Element, vr: str, action: Action,
        depth: int, strict: bool, pairs: dict[int, str],
    ) -> None:
        if vr == "SQ":
            if action is Action.ZERO:
                out.add(DataElement(tag, "SQ", Sequence()))
                return
            items = self.element(src, tag).value or ()
            inner_strict = strict or action is Action.DUMMY
            made = [self.dataset(item, depth + 1, inner_strict) for item in items]
            if all(unchanged(item, new) for item, new in zip(items, made)):
                out._dict[BaseTag(tag)] = elem  # nothing inside changed: the bytes as received
                return
            out.add(DataElement(tag, "SQ", Sequence(made)))
        elif action is Action.ZERO:
            if vr in STRING_VRS:
                self._put(src, out, tag, vr, [])
            else:
                out.add(DataElement(tag, vr, b"" if vr in ("OB", "OW", "UN") else None))
        elif vr == "UI":
            self._put(src, out, tag, vr, [self._uid(v) for v in self.strings(src, tag, elem, vr)])
        elif action is Action.DUMMY or action is Action.UID:
            dummy = dummy_value(vr)
            if isinstance(dummy, str):
                self._put(src, out, tag, vr, [dummy])
            else:
                out.add(DataElement(tag, vr, dummy))
        elif vr in DATE_VRS:  # Action.CLEAN on a date: shift it
            self._put(src, out, tag, vr, self._shift(src, tag, elem, vr, pairs))
        elif vr in TEXT_VRS or vr in ("PN", "CS"):  # Action.CLEAN on text: remove identifiers
            self._clean(src, out, tag, elem, vr)
        elif vr in ("OB", "UN"):  # Action.CLEAN on bytes: overwrite identifiers in place
            value = self.element(src, tag).value
            cleaned = self.identifiers.blank(value) if isinstance(value, bytes) else value
            out.add(DataElement(tag, vr, cleaned))
        else:
            out._dict[BaseTag(tag)] = src.get_item(BaseTag(tag))

    def _clean(self, src: Dataset, out: Dataset, tag: int, elem: Element, vr: str) -> None:
        values = self.strings(src, tag, elem, vr)
        cleaned = [self.identifiers.scrub(v) for v in values]
        if cleaned == values:
            out._dict[BaseTag(tag)] = elem
        else:
            dummy = str(dummy_value(vr))
            self._put(src, out, tag, vr, [c or dummy for c in cleaned])

    def _put(self, src: Dataset, out: Dataset, tag: int, vr: str, values: list[str]) -> None:
        """Store new string values, raw in the source's encoding where possible."""
        raw = encode(tag, vr, values, src.original_encoding, self._codec(src))
        if raw is not None:
            out._dict[BaseTag(tag)] = raw
            self.generated.add(id(raw))
        else:
            out.add(DataElement(tag, vr, one_or_many(values)))

    def _uid(self, value: str) -> str:
        new = self.lookup.uid(value)
        if new != value:
            self.uid_map[value] = new
            self._new_uids.append((value, new))
        return new

    # -- dates ---------------------------------------------------------------
    def _date_time_pairs(self, src: Dataset) -> dict[int, str]:
        """Shifted values of Date/Time partners (StudyDate+StudyTime...) in ``src``."""
        pseudonym = self.pseudonym
        shifted: dict[int, str] = {}
        if pseudonym is None:
            return shifted
        elements = src._dict
        for base_tag in elements.keys() & DATE_TIME_PARTNERS.keys():
            date_tag = int(base_tag)
            time_tag = DATE_TIME_PARTNERS[date_tag]
            time_elem = elements.get(BaseTag(time_tag))
            if time_elem is None:
                continue
            days = self.strings(src, date_tag, elements[base_tag], "DA")
            times = self.strings(src, time_tag, time_elem, "TM")
            if len(days) != 1 or len(times) != 1:
                continue
            new_day, new_time = shift_pair(
                days[0], times[0], pseudonym.day_offset, pseudonym.second_offset
            )
            if new_day and new_time:
                shifted[date_tag], shifted[time_tag] = new_day, new_time
        return shifted

    def _shift(
        self, src: Dataset, tag: int, elem: Element, vr: str, pairs: dict[int, str]
    ) -> list[str]:
        if tag in pairs:
            return [pairs[tag]]
        return [self._shift_one(vr, value) for value in self.strings(src, tag, elem, vr)]

    def _shift_one(self, vr: str, value: str) -> str:
        """One value shifted by the patient's offset (memoized: a study repeats its dates)."""
        key = (vr, value)
        found = self._shifted.get(key)
        if found is None:
            pseudonym = self.pseudonym
            if pseudonym is None:
                new = None
            elif vr == "DA":
                new = dates.shift_date(value, pseudonym.day_offset)
            elif vr == "TM":
                new = dates.shift_time(value, pseudonym.second_offset)
            else:
                new = dates.shift_datetime(value, pseudonym.day_offset, pseudonym.second_offset)
            found = self._shifted[key] = new if new is not None else str(dummy_value(vr))
        return found

    # -- private attributes ----------------------------------------------------
    def _safe_private_blocks(self, src: Dataset) -> set[tuple[int, int]]:
        safe = self.profile.safe_private_creators
        blocks: set[tuple[int, int]] = set()
        for base_tag, elem in src._dict.items():
            group, number = base_tag >> 16, base_tag & 0xFFFF
            if group & 1 and 0x10 <= number <= 0xFF:
                creator = self.strings(src, int(base_tag), elem, "LO")
                if creator and creator[0].strip() in safe:
                    blocks.add((group, number))
        return blocks

    def _private(
        self, src: Dataset, out: Dataset, tag: int, elem: Element,
        creators: set[tuple[int, int]], depth: int,
    ) -> None:
        group, number = tag >> 16, tag & 0xFFFF
        block = number if number <= 0xFF else number >> 8
        if number < 0x10 or (group, block) not in creators:
            self.counts["X"] += 1
            return
        self.counts[self.profile.private_action.value] += 1
        vr = str(elem.VR or "UN")
        if vr == "SQ":
            items = self.element(src, tag).value or ()
            out.add(DataElement(tag, "SQ", Sequence(
                [self.dataset(item, depth + 1, False) for item in items]
            )))
        elif vr in TEXT_VRS and number > 0xFF:
            self._clean(src, out, tag, elem, vr)
        else:
            out._dict[BaseTag(tag)] = src.get_item(BaseTag(tag))
