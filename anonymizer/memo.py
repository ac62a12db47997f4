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
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, MutableMapping
from typing import Any

from .tags import VALUE_CACHE_LIMIT

__all__ = ["remember", "scope"]

_SCOPES = itertools.count()


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
