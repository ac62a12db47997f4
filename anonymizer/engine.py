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

The instances of a series share work: what to do with each element is
decided once per layout (:mod:`anonymizer.layout`), and the result of an
action on a value met before, in the same scope, is reused
(:mod:`anonymizer.memo`); neither ever changes what an instance becomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from operator import attrgetter

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from . import dates, memo
from .actions import Action
from .dummies import dummy_value
from .identifiers import Identifiers
from .layout import Shape, layout
from .profile import Profile
from .pseudonyms import Pseudonym, PseudonymLookup
from .reader import Reader
from .tags import (
    CACHED_VALUE_BYTES,
    DATE_VRS,
    ENCAPSULATED_DOCUMENT,
    PATIENT_ID,
    PATIENT_NAME,
    STRING_VRS,
    TEXT_VRS,
    Element,
    one_or_many,
    unchanged,
)
from .values import encode, encode_sequence

__all__ = ["Walker"]

_VALUE = attrgetter("value")
#: elements of the top level that the walk leaves to the caller (or to a person's review)
_BY_CALLER = frozenset({PATIENT_NAME, PATIENT_ID, ENCAPSULATED_DOCUMENT})
_NOTHING: Counter[str] = Counter()  # what an element outside a sequence counts (never changed)


class Walker(Reader):
    """One de-identification of one dataset; holds what it learned on the way.

    Parameters
    ----------
    profile : Profile
        The resolved actions.
    lookup : PseudonymLookup
        Pseudonyms and UID replacements (one pseudonym space).
    """

    def __init__(self, profile: Profile, lookup: PseudonymLookup) -> None:
        super().__init__(profile)
        self.lookup = lookup
        self.counts: Counter[str] = Counter()
        self.uid_map: dict[str, str] = {}
        self.review: list[str] = []
        self.identifiers = Identifiers({}, None)
        self.pseudonym: Pseudonym | None = None
        self._shifted: dict[tuple[str, str], str] = {}
        #: id() of the raw elements the engine made itself, for the gate
        self.generated: set[int] = set()
        #: what an action's result depends on beside the value: set once the patient is known
        self.context: tuple[Hashable, ...] = ()
        self._context: tuple[int, ...] | None = None
        self._new_uids: list[tuple[str, str]] = []
        #: set for an encapsulated-document instance: its document is kept for review
        self.keep_document = False

    # -- the walk ----------------------------------------------------------
    def dataset(self, src: Dataset, depth: int, strict: bool) -> Dataset:
        """Return the de-identified copy of ``src`` (a dataset or sequence item).

        ``strict`` is set inside a sequence whose action is D: unlisted text
        there gets a dummy instead of being cleaned.

        A series repeats most values, and an action's result depends only on
        the value, the action, the encoding, the position and the patient's
        identifiers, pseudonym and pseudonym space (the dataset's
        :func:`~anonymizer.memo.scope`). Results are immutable raw elements,
        shared between outputs through ``Profile.value_cache``.
        """
        out = Dataset(parent_encoding=src._parent_encoding)
        encoding = implicit, little = src.original_encoding
        out.set_original_encoding(implicit, little, src.original_character_set)
        creators = self._safe_private_blocks(src) if self._keep_private else set()
        form = self.shape(src)
        keys, elements = list(src._dict), list(src._dict.values())
        pairs = self._date_time_pairs(src, form, elements) if self.profile.shifts_dates else {}
        cache = self._cache
        if self._context is None:  # the patient's identifiers and pseudonym, the space
            self._context = tuple(memo.number(cache, part) for part in (*self.context, self.lookup))
        scope = memo.scope(cache, (self._context, encoding, self._text_form(src)[1], strict, depth))
        plan = layout(self.profile, self._overlay_gone, form, strict)
        # every element as it is, then the removed ones out; the actions replace the rest
        made = out._dict
        made.update(src._dict)
        for position in plan.drop:
            del made[keys[position]]
        if None in map(_VALUE, map(elements.__getitem__, plan.keep)):  # values pydicom deferred
            for position in plan.keep:
                if elements[position].value is None:
                    made[keys[position]] = self._deferred(src, elements[position])
        counts = self.counts
        counts.update(plan.counted)
        for position in plan.private:
            self._private(src, out, keys[position], form.tags[position], elements[position],
                          creators, depth)
        generated = self.generated
        for position, tag, vr, action, read_vr in plan.apply:
            base_tag, elem = keys[position], elements[position]
            if tag in _BY_CALLER and depth == 0:
                if tag != ENCAPSULATED_DOCUMENT:
                    del made[base_tag]  # PatientName, PatientID: written by the caller
                    continue
                if self.keep_document:
                    self.review.append("encapsulated document: its content cannot be "
                                       "de-identified")
                    out[base_tag] = src.get_item(base_tag)
                    continue
            value = elem.value
            if not isinstance(elem, RawDataElement) or not isinstance(value, bytes) \
                    or len(value) > CACHED_VALUE_BYTES:
                self._apply(src, out, base_tag, tag, elem, vr, action, depth, strict, pairs)
                continue
            key = (tag, read_vr, value, scope, pairs.get(tag) if pairs else None)
            hit = cache.get(key)
            if hit is None:
                self._remember(src, out, base_tag, tag, elem, vr, action, depth, strict, pairs,
                               key)
                continue
            produced, uids, counted, made_here = hit
            if produced is None:
                made[base_tag] = elem
            else:
                made[base_tag] = produced
                if made_here:
                    generated.add(id(produced))
            if uids:
                self.uid_map.update(uids)
                self._new_uids.extend(uids)
            if counted:
                counts.update(counted)  # what the elements inside a sequence counted
        return out

    def _remember(
        self, src: Dataset, out: Dataset, base_tag: BaseTag, tag: int, elem: Element, vr: str,
        action: Action, depth: int, strict: bool, pairs: dict[int, str], key: Hashable,
    ) -> None:
        """Apply ``action`` and keep the result for the next instance that has the same value."""
        outer, self._new_uids = self._new_uids, []
        before = Counter(self.counts) if vr == "SQ" else None  # only items count elements
        self._apply(src, out, base_tag, tag, elem, vr, action, depth, strict, pairs)
        mine, self._new_uids = tuple(self._new_uids), outer
        outer.extend(mine)
        made = out._dict.get(base_tag)  # the source's own tag object: found without comparing
        counted = _NOTHING if before is None else self.counts - before
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
        memo.remember(self._cache, key, result)

    def _apply(
        self, src: Dataset, out: Dataset, key: BaseTag, tag: int, elem: Element, vr: str,
        action: Action, depth: int, strict: bool, pairs: dict[int, str],
    ) -> None:
        """Apply ``action`` to ``elem``, the source's element ``key`` (its ``tag``)."""
        if vr == "SQ":
            if action is Action.ZERO:
                out.add(DataElement(tag, "SQ", Sequence()))
                return
            items = self.element(src, tag).value or ()
            inner_strict = strict or action is Action.DUMMY
            made = [self.dataset(item, depth + 1, inner_strict) for item in items]
            if all(unchanged(item, new) for item, new in zip(items, made)):
                out._dict[key] = elem  # nothing inside changed: the bytes as received
                return
            out.add(DataElement(tag, "SQ", Sequence(made)))
        elif action is Action.ZERO:
            if vr in STRING_VRS:
                self._put(src, out, key, tag, vr, [])
            else:
                out.add(DataElement(tag, vr, b"" if vr in ("OB", "OW", "UN") else None))
        elif vr == "UI":
            self._put(src, out, key, tag, vr,
                      [self._uid(v) for v in self.strings(src, tag, elem, vr)])
        elif action is Action.DUMMY or action is Action.UID:
            dummy = dummy_value(vr)
            if isinstance(dummy, str):
                self._put(src, out, key, tag, vr, [dummy])
            else:
                out.add(DataElement(tag, vr, dummy))
        elif vr in DATE_VRS:  # Action.CLEAN on a date: shift it
            self._put(src, out, key, tag, vr, self._shift(src, tag, elem, vr, pairs))
        elif vr in TEXT_VRS or vr in ("PN", "CS"):  # Action.CLEAN on text: remove identifiers
            self._clean(src, out, key, tag, elem, vr)
        elif vr in ("OB", "UN"):  # Action.CLEAN on bytes: overwrite identifiers in place
            value = self.element(src, tag).value
            cleaned = self.identifiers.blank(value) if isinstance(value, bytes) else value
            out.add(DataElement(tag, vr, cleaned))
        else:
            out._dict[key] = src.get_item(key)

    def _clean(
        self, src: Dataset, out: Dataset, key: BaseTag, tag: int, elem: Element, vr: str,
    ) -> None:
        values = self.strings(src, tag, elem, vr)
        cleaned = [self.identifiers.scrub(v) for v in values]
        if cleaned == values:
            out._dict[key] = elem
        else:
            dummy = str(dummy_value(vr))
            self._put(src, out, key, tag, vr, [c or dummy for c in cleaned])

    def _put(
        self, src: Dataset, out: Dataset, key: BaseTag, tag: int, vr: str, values: list[str],
    ) -> None:
        """Store new string values, raw in the source's encoding where possible."""
        raw = encode(tag, vr, values, src.original_encoding, self.codec(src))
        if raw is not None:
            out._dict[key] = raw
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
    def _date_time_pairs(
        self, src: Dataset, form: Shape, elements: list[Element],
    ) -> dict[int, str]:
        """Shifted values of Date/Time partners (StudyDate+StudyTime...) in ``src``."""
        pseudonym = self.pseudonym
        shifted: dict[int, str] = {}
        if pseudonym is None:
            return shifted
        cache = self._cache
        for date_position, date_tag, time_position, time_tag in form.pairs:
            date_elem, time_elem = elements[date_position], elements[time_position]
            day, time = date_elem.value, time_elem.value
            key: Hashable = None
            if isinstance(date_elem, RawDataElement) and isinstance(time_elem, RawDataElement) \
                    and isinstance(day, bytes) and isinstance(time, bytes) \
                    and len(day) + len(time) <= CACHED_VALUE_BYTES:  # a series repeats them
                key = ("pair", day, time, pseudonym.day_offset, pseudonym.second_offset)
                found = cache.get(key)
                if found is not None:
                    if found:
                        shifted[date_tag], shifted[time_tag] = found
                    continue
            days = self.strings(src, date_tag, date_elem, "DA")
            times = self.strings(src, time_tag, time_elem, "TM")
            new: tuple[str, str] | tuple[()] = ()
            if len(days) == 1 and len(times) == 1:
                new_day, new_time = dates.shift_date_time(
                    days[0], times[0], pseudonym.day_offset, pseudonym.second_offset
                )
                if new_day and new_time:
                    new = (new_day, new_time)
                    shifted[date_tag], shifted[time_tag] = new
            if key is not None:
                memo.remember(cache, key, new)
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
        self, src: Dataset, out: Dataset, key: BaseTag, tag: int, elem: Element,
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
            self._clean(src, out, key, tag, elem, vr)
        else:
            out._dict[key] = src.get_item(key)
