"""What the engine does with each element of a dataset, decided once per layout.

The instances of a series hold the same attributes in the same order with
the same VRs (their layout); only values differ. What the engine does with
an element (keep it, remove it, treat it as private, apply an action that
looks at the value, collect it as an identifier, walk into it, shift it with
its Date/Time partner) depends only on its tag, the VR it was read with and
whether the walk is strict, never on its value. So it is decided once per
layout (a :class:`Shape`, remembered per profile): a dataset's elements are
then copied in one step, the removed ones taken out, and only the elements
whose action looks at the value are visited one by one.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from pydicom.tag import BaseTag

from .actions import Action
from .profile import Profile
from .tags import DATE_TIME_PARTNERS, SQ_TAGS, Element, unlisted_action, vr_as_read

__all__ = ["APPLY", "KEEP", "PRIVATE", "SKIP", "Layout", "Shape", "decide", "shape"]

# what the walk does with an element
SKIP, KEEP, PRIVATE, APPLY = range(4)
#: layouts remembered per profile before starting afresh, and the largest remembered
_SHAPES = 256
_LARGEST = 2048
#: decisions per (tag, VR as read, strict) remembered before starting afresh
_DECISIONS = 65536
_VR = attrgetter("VR")


@dataclass(frozen=True, slots=True)
class Layout:
    """The walk's plan for every dataset of one layout, strict or not."""

    #: positions of the elements kept as they are
    keep: tuple[int, ...]
    #: positions of private elements (their creators decide, per dataset)
    private: tuple[int, ...]
    #: (position, tag, VR, action, VR as read) of the elements whose action looks at the value
    apply: tuple[tuple[int, int, str, Action, str | None], ...]
    #: action codes of the elements that are not private, counted
    counted: Counter[str]
    #: positions of the elements removed (private ones included: their creators decide)
    drop: tuple[int, ...]


@dataclass(slots=True)
class Shape:
    """What the engine knows about every dataset of one layout."""

    tags: array[int]
    vrs: tuple[str | None, ...]
    #: (position, tag, keyword, kind) of the identifier attributes to collect
    identifiers: tuple[tuple[int, int, str, str], ...]
    #: positions of the sequences the identifiers are collected from
    sequences: tuple[int, ...]
    #: (date position, date tag, time position, time tag) of the Date/Time partners present
    pairs: tuple[tuple[int, int, int, int], ...]
    #: positions of the identifiers, then of the sequences
    collected: tuple[int, ...] = ()
    #: tag -> position
    positions: dict[int, int] = field(default_factory=dict)
    #: the walk's plan, strict (True) or not (False), made when first needed
    layouts: dict[bool, Layout] = field(default_factory=dict)


def decide(
    profile: Profile, overlay_gone: bool, tag: int, read_vr: str | None, strict: bool,
) -> tuple[int, str, Action, str]:
    """(step, VR, action, action code) for an element (see :mod:`anonymizer.engine`)."""
    group, number = tag >> 16, tag & 0xFFFF
    if number == 0 or group <= 2:  # group lengths, command and meta elements
        return SKIP, "", Action.REMOVE, Action.REMOVE.value
    if group & 1:
        return PRIVATE, "", Action.REMOVE, Action.REMOVE.value
    vr = vr_as_read(tag, read_vr)
    action = profile.action_for(tag)
    if overlay_gone and tag >> 16 & 0xFF01 == 0x6000:
        action = Action.REMOVE
    if action is None:
        action = unlisted_action(profile, tag, vr, strict)
    if action is Action.REMOVE:
        step = SKIP
    elif action is Action.KEEP and vr != "SQ":
        step = KEEP
    else:
        step = APPLY
    return step, vr, action, action.value


def shape(
    profile: Profile, kinds: Mapping[int, tuple[str, str]], keep_private: bool,
    elements: Mapping[BaseTag, Element],
) -> Shape:
    """The shape of ``elements`` (a dataset's own mapping, in its order).

    ``kinds`` and ``keep_private`` are derived from ``profile``: the
    identifier attributes it does not keep, and Retain Safe Private.
    """
    tags = array("L", elements)
    vrs = tuple(map(_VR, elements.values()))
    key = (tags.tobytes(), vrs)
    shapes = profile.derived.setdefault("shapes", {})
    found: Shape | None = shapes.get(key)
    if found is None:
        positions = {tag: position for position, tag in enumerate(tags)}
        found = Shape(
            tags, vrs,
            identifiers=tuple(
                (position, tag, *kinds[tag])
                for position, tag in enumerate(tags) if tag in kinds
            ),
            sequences=tuple(
                position for position, (tag, vr) in enumerate(zip(tags, vrs))
                if (vr == "SQ" or vr is None and tag in SQ_TAGS)
                and (keep_private or not tag >> 16 & 1)
            ),
            pairs=tuple(
                (position, tag, positions[DATE_TIME_PARTNERS[tag]], DATE_TIME_PARTNERS[tag])
                for position, tag in enumerate(tags)
                if tag in DATE_TIME_PARTNERS and DATE_TIME_PARTNERS[tag] in positions
            ),
        )
        found.collected = tuple(i[0] for i in found.identifiers) + found.sequences
        found.positions = positions
        if len(tags) <= _LARGEST:
            if len(shapes) >= _SHAPES:
                shapes.clear()
            shapes[key] = found
    return found


def layout(profile: Profile, overlay_gone: bool, found: Shape, strict: bool) -> Layout:
    """The walk's plan for datasets of shape ``found``."""
    made = found.layouts.get(strict)
    if made is None:
        made = found.layouts[strict] = _compile(
            profile, overlay_gone, found.tags, found.vrs, strict
        )
    return made


def _compile(
    profile: Profile, overlay_gone: bool, tags: array[int], vrs: tuple[str | None, ...],
    strict: bool,
) -> Layout:
    keep: list[int] = []
    private: list[int] = []
    drop: list[int] = []
    apply: list[tuple[int, int, str, Action, str | None]] = []
    counted: Counter[str] = Counter()
    plan = profile.plan_cache
    for position, (tag, read_vr) in enumerate(zip(tags, vrs)):
        decided = plan.get((tag, read_vr, strict))
        if decided is None:
            if len(plan) >= _DECISIONS:  # private and unknown tags are countless
                plan.clear()
            decided = plan[(tag, read_vr, strict)] = decide(
                profile, overlay_gone, tag, read_vr, strict
            )
        step, vr, action, code = decided
        if step == PRIVATE:
            private.append(position)
            drop.append(position)
            continue
        counted[code] += 1
        if step == KEEP:
            keep.append(position)
        elif step == APPLY:
            apply.append((position, tag, vr, action, read_vr))
        else:
            drop.append(position)
    return Layout(tuple(keep), tuple(private), tuple(apply), counted, tuple(drop))
