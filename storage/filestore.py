"""The file store: write-once instance files with checksums, written atomically.

RELIABILITY.md I3: a file name is never built from a value a peer sent; each
file is ``<root>/ab/cd/<uuid4 hex>.dcm`` from a generated identifier, and the
index keeps the relative path. Writes follow the durability contract
(ARCHITECTURE.md, point 1; I1): a temporary name in the final folder, fsync,
``os.replace``, fsync of the folder. On any failure the temporary file is
removed; a full disk raises :class:`~storage.errors.StorageFull` (0xA700).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Final, cast

from ._fsutil import fsync_dir, fsync_file, is_disk_full, make_dirs, older_than, sync_filesystem
from .errors import StorageError, StorageFull

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["FileStore", "StoredFile"]

logger = logging.getLogger(__name__)

_SUFFIX: Final = ".dcm"
_TEMP_SUFFIX: Final = ".tmp"
_FILE_MODE: Final = 0o640
_DIR_MODE: Final = 0o750
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file written by :meth:`FileStore.write`.

    ``path`` is relative to the store's root (POSIX separators), ``size``
    in bytes, ``sha256`` the hex digest of the file as stored.
    """

    path: str
    size: int
    sha256: str


class _HashingWriter(io.RawIOBase):
    """Write through to a file, hashing bytes as long as they are appended in order.

    A writer that seeks back to patch a length (pydicom does, for defined
    length sequence items) makes the running hash useless; the store then
    hashes the finished file instead.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._pos = 0
        self.rewritten = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        self._raw.write(view)
        if self._pos == self._hashed:
            self._hash.update(view)
            self._hashed += len(view)
        else:
            self.rewritten = True
        self._pos += len(view)
        return len(view)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def truncate(self, size: int | None = None, /) -> int:
        self.rewritten = True
        return self._raw.truncate(size)

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def hexdigest(self, size: int) -> str | None:
        """The running digest, or ``None`` when it does not cover the file."""
        if self.rewritten or self._hashed != size:
            return None
        return self._hash.hexdigest()


class FileStore:
    """Write-once files under ``root``, named from generated identifiers only.

    Parameters
    ----------
    root : pathlib.Path
        The store's folder (created when missing); on the same file system
        for all nodes that share it (ARCHITECTURE.md, scale-out).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        make_dirs(self.root, _DIR_MODE)

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def write(self, fill: Callable[[BinaryIO], None], *, key: str | None = None,
              sync: bool = True) -> StoredFile:
        """Write a new file whose bytes ``fill`` writes, atomically and durably.

        Parameters
        ----------
        fill : Callable[[BinaryIO], None]
            Writes the file's bytes to the handle it gets (it may seek).
        key : str, optional
            Makes the name a hash of ``key`` instead of a random one, so that
            work repeated after a crash (the same key) replaces its own
            earlier file instead of leaving an orphan beside the new one.
            The key is the caller's own value, never a peer's.
        sync : bool
            ``False`` leaves the fsyncs to a later :meth:`sync` of a whole
            group of files (a group commit): the file is renamed into place
            but is durable only once that call returned.

        Returns
        -------
        StoredFile
            The relative path, size and SHA-256 of the file.

        Raises
        ------
        StorageFull
            The file system is out of space or quota (answer 0xA700,
            PS3.4 B.2.3); no file is left behind.
        Exception
            Whatever ``fill`` raised; no file is left behind.
        """
        name = (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] if key is not None
                else uuid.uuid4().hex)
        folder = self.root / name[:2] / name[2:4]
        # the temporary name is this writer's alone: a writer of the same key killed
        # mid-write (its temporary waits for the start-up sweep, which spares recent
        # ones on a shared store) or still at work on another node never blocks this one
        temp = folder / f".{name}.{uuid.uuid4().hex[:16]}{_TEMP_SUFFIX}"
        final = folder / f"{name}{_SUFFIX}"
        try:
            make_dirs(folder, _DIR_MODE, sync=sync)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                writer = _HashingWriter(handle)
                # pydicom writes element by element: buffer, so the hashing writer
                # sees large blocks (a seek flushes the buffer first)
                buffered = io.BufferedWriter(writer, _CHUNK)
                fill(cast(BinaryIO, buffered))
                buffered.flush()
                buffered.detach()
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
                size = os.fstat(handle.fileno()).st_size
            digest = writer.hexdigest(size) or _sha256_of(temp)
            os.replace(temp, final)
            if sync:
                fsync_dir(folder)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise StorageFull(f"file store {self.root}: no space left to write") from exc
            raise
        return StoredFile(path=f"{name[:2]}/{name[2:4]}/{name}{_SUFFIX}", size=size,
                          sha256=digest)

    def sync(self, rels: Sequence[str]) -> None:
        """Make files written with ``sync=False`` durable, with their folder entries.

        One ``syncfs`` of the store's file system where the platform has it
        (a single journal commit for the whole group), otherwise an fsync of
        each file and of each folder.

        Raises
        ------
        StorageFull
            Write-back ran out of space: the files are not durable.
        OSError
            Any other write-back failure.
        """
        if not rels:
            return
        try:
            if sync_filesystem(self.root):
                return
            paths = [self.path_of(rel) for rel in rels]
            for path in paths:
                fsync_file(path)
            # each file's folder, and the folders above it that may have been created
            folders = {folder for path in paths for folder in (path.parent, path.parent.parent)}
            for folder in sorted(folders | {self.root}, reverse=True):
                fsync_dir(folder)
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull(f"file store {self.root}: no space left to write") from exc
            raise

    def path_of(self, rel: str) -> Path:
        """Return the absolute path of a stored file.

        Raises
        ------
        StorageError
            When ``rel`` is absolute, empty, or has a ``..`` part (I3).
        """
        if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
            raise StorageError(f"file store path: expected a relative path, got {rel!r}")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel.startswith("/"):
            raise StorageError(
                f"file store path: expected a path inside the store, got {rel!r}"
            )
        return self.root.joinpath(*pure.parts)

    def open(self, rel: str) -> BinaryIO:
        """Open a stored file for reading (the caller closes it)."""
        return self.path_of(rel).open("rb")

    def remove(self, rel: str) -> bool:
        """Delete a stored file; ``False`` when it was already gone."""
        path = self.path_of(rel)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep_temporary(self, *, min_age_seconds: float = 0.0) -> int:
        """Delete temporary files left by writes that never finished.

        Call it at start-up. When other processes share the store and may
        be writing, pass ``min_age_seconds`` (say 600) so that only files
        no writer can still be working on are removed.

        Returns
        -------
        int
            How many files were removed.
        """
        removed = 0
        for temp in self.root.glob(f"*/*/.*{_TEMP_SUFFIX}"):
            if older_than(temp, min_age_seconds):
                try:
                    temp.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
        if removed:
            logger.info("file store swept temporary=%d", removed)
        return removed


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
