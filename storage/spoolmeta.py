"""A spool entry's metadata: who sent it, to whom, from where and when.

Kept as JSON either in an extended attribute of the entry's data file
(:data:`XATTR`, in the ``user`` namespace: durable with the file's own
fsync) or, where the file system has no extended attributes, in a sidecar
file beside it; see :mod:`storage.spool`.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from .errors import StorageError

__all__ = ["XATTR", "SpoolMeta", "has_meta_attribute", "read_meta", "set_meta"]

#: the extended attribute holding an entry's metadata
XATTR: Final = "user.dicom-gateway.spool"
#: errors that mean "no extended attributes here": fall back to a sidecar
_NO_XATTR: Final = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.E2BIG, errno.ENOSPC, errno.ERANGE}


@dataclass(frozen=True, slots=True)
class SpoolMeta:
    """Who sent a spooled file, to whom, from where and when (timezone-aware).

    ``released`` is set when a person reviewed a quarantined entry and sent
    it back (:meth:`Spool.release_from_quarantine`); sidecars written before
    the field existed read as ``False``.
    """

    calling_ae_title: str
    called_ae_title: str
    source_peer: str | None
    received_at: datetime
    peer_address: str
    released: bool = False

    def to_json(self) -> bytes:
        """Encode as the sidecar's JSON."""
        return json.dumps({
            "calling_ae_title": self.calling_ae_title,
            "called_ae_title": self.called_ae_title,
            "source_peer": self.source_peer,
            "received_at": self.received_at.isoformat(),
            "peer_address": self.peer_address,
            "released": self.released,
        }, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> SpoolMeta:
        """Decode a sidecar; :class:`StorageError` when it is not one."""
        try:
            raw = json.loads(data)
            meta = cls(
                calling_ae_title=str(raw["calling_ae_title"]),
                called_ae_title=str(raw["called_ae_title"]),
                source_peer=None if raw["source_peer"] is None else str(raw["source_peer"]),
                received_at=datetime.fromisoformat(raw["received_at"]),
                peer_address=str(raw["peer_address"]),
                released=raw.get("released", False) is True,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"spool sidecar: not valid metadata ({type(exc).__name__})") from exc
        if meta.received_at.tzinfo is None:
            raise StorageError("spool sidecar received_at: expected a timezone-aware time")
        return meta


def set_meta(path: Path, meta: SpoolMeta) -> bool:
    """Attach ``meta`` to the file as an extended attribute; ``False`` where there are none."""
    if not hasattr(os, "setxattr"):
        return False
    try:
        os.setxattr(path, XATTR, meta.to_json())
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return False
        raise
    return True


def has_meta_attribute(path: Path) -> bool:
    try:
        return hasattr(os, "getxattr") and bool(os.getxattr(path, XATTR))
    except OSError:
        return False


def read_meta(data: Path, sidecar: Path) -> SpoolMeta:
    """An entry's metadata: its sidecar when there is one, else the data file's attribute.

    Raises
    ------
    OSError
        Neither can be read.
    StorageError
        What was read is not valid metadata.
    """
    try:
        return SpoolMeta.from_json(sidecar.read_bytes())
    except FileNotFoundError:
        if not hasattr(os, "getxattr"):
            raise
    return SpoolMeta.from_json(os.getxattr(data, XATTR))
