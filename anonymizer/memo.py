"""What the instances of a series share: results kept in ``Profile.value_cache``.

A series repeats most of its values, and every piece of de-identification
work on a value is a pure function of that value and of a few things around
it (the encoding, the character set, the patient's identifiers and
pseudonym, the pseudonym space, the position). The cache keeps such
results, bounded in count (:data:`~anonymizer.tags.VALUE_CACHE_LIMIT`) and
in the size of the values it is keyed by
(:data:`~anonymizer.tags.CACHED_VALUE_BYTES`).

The things around a value are the same for every element of a dataset, so
they are hashed once per dataset: :func:`scope` stands them for a small
integer that is never handed out twice in a process. A key holding a scope
is as specific as one holding the things themselves, and stays so when the
cache is cleared (a scope dropped with it is never reissued for anything
else).

Most values of an instance are the very values of the instance before it in
the series, at the same positions of the same layout. :func:`keep` and
:func:`recall` hold what the last instance of a layout brought (its values
at the positions that matter, and what came of them), so that the next one
compares its values with them in one step and looks up only those that
differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, MutableMapping
from typing import Any

from .tags import VALUE_CACHE_LIMIT

__all__ = ["RECENT_BYTES", "keep", "number", "recall", "remember", "scope"]

_SCOPES = itertools.count()
#: what the last instances brought, kept per profile before starting afresh, and the
#: most bytes of values one of them holds (so the store holds at most about 16 MB)
_RECENT = 256
RECENT_BYTES = 65536


def remember(cache: MutableMapping[Hashable, Any], key: Hashable, value: object) -> None:
    """Keep ``value`` under ``key``; a full cache starts afresh."""
    if len(cache) >= VALUE_CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def scope(cache: MutableMapping[Hashable, Any], around: Hashable) -> int:
    """The integer standing for ``around`` in the keys of ``cache``."""
    key = ("scope", around)
    found = cache.get(key)
    if found is None:
        found = next(_SCOPES)
        remember(cache, key, found)
    return int(found)


def number(cache: MutableMapping[Hashable, Any], thing: Hashable) -> int:
    """The :func:`scope` of ``thing``, found by identity first.

    For things that cost to hash and compare (a compiled pattern, a
    pseudonym) but that are the very same object instance after instance;
    another object, even an equal one, takes the longer way.
    """
    key = ("number", id(thing))
    found = cache.get(key)
    if found is not None and found[1] is thing:
        return int(found[0])
    value = scope(cache, thing)
    remember(cache, key, (value, thing))  # holds the thing: its id is not reused meanwhile
    return value


def recall(store: dict[Hashable, Any], owner: object, key: Hashable) -> Any:
    """What :func:`keep` kept for ``owner`` (a layout) under ``key``, or None."""
    found = store.get((id(owner), key))
    if found is not None and found[0] is owner:
        return found[1]
    return None


def keep(store: dict[Hashable, Any], owner: object, key: Hashable, state: object) -> None:
    """Keep ``state`` for ``owner`` under ``key``: what the last instance of a layout brought.

    The store holds the owner itself, so that an owner dropped and another
    made at its address never sees its state.
    """
    if len(store) >= _RECENT:
        store.clear()
    store[(id(owner), key)] = (owner, state)
