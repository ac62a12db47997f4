"""Values too large to hold in memory pass through as a window on the source file.

pydicom reads a value larger than ``defer_size`` only when it is accessed,
and then whole. An element the engine keeps unchanged (pixel data above
all: a whole-slide image or a long multi-frame can be gigabytes) becomes a
*buffered* value instead (pydicom 3): a read-only window on the exact bytes
of the source file, which pydicom's writer copies in chunks. Memory stays
bounded whatever the size (ARCHITECTURE durability contract 4: pixel data is
never decoded, and outgoing files are written from disk).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from pydicom.dataelem import DataElement, RawDataElement

__all__ = ["FileWindow", "streamed", "streamed_file"]


class FileWindow(io.RawIOBase):
    """The bytes ``[offset, offset + length)`` of a file, seen as a whole file."""

    def __init__(self, path: str | Path, offset: int, length: int) -> None:
        super().__init__()
        self._path = path
        self._file: io.BufferedReader | None = None  # opened on first read, closed at the end
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            self._release()
            return 0
        if self._file is None:
            self._file = open(self._path, "rb")  # noqa: SIM115 (closed by _release)
        self._file.seek(self._offset + self._position)
        count = self._file.readinto(memoryview(buffer)[:wanted])
        if count == 0:
            raise OSError(f"{self._path}: the file ends inside a deferred value")
        self._position += count
        return count

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._release()
        super().close()


def streamed(raw: RawDataElement, path: str | Path) -> DataElement:
    """A DataElement whose value is a window on ``raw``'s deferred bytes in ``path``."""
    window = io.BufferedReader(FileWindow(path, raw.value_tell, raw.length))
    return DataElement(raw.tag, raw.VR or "OB", window)


def streamed_file(tag: int, vr: str, path: str | Path, length: int) -> DataElement:
    """A DataElement whose value is the first ``length`` bytes of ``path``, read when written."""
    return DataElement(tag, vr, io.BufferedReader(FileWindow(path, 0, length)))
