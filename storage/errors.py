"""The storage errors: ``StorageError`` and the conditions callers map to statuses.

Each package has its own base error (STYLE.md section 6). A message names the
field or file and what was expected; it never holds PHI: it quotes generated
names, remapped UIDs, pseudonyms and peer slugs only.
"""

from __future__ import annotations

__all__ = ["StorageError", "StorageFull"]


class StorageError(Exception):
    """Something the storage layer was asked to do cannot be done."""


class StorageFull(StorageError):
    """The file system ran out of space or quota while writing.

    The SCP handler answers a C-STORE with 0xA700 "Refused: Out of
    resources" (PS3.4 B.2.3, Table B.2-1) when it sees this; nothing
    half-written is kept (ARCHITECTURE.md, durability contract, point 1).
    """
