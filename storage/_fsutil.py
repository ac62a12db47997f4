"""File-system helpers shared by the file store and the spool.

Durable renames need the folder fsync'd after the rename (RELIABILITY.md I1:
"temp name, fsync, rename, fsync of the folder"); a full disk must surface as
:class:`~storage.errors.StorageFull` so the caller can answer 0xA700.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file", "io_threads", "is_disk_full", "make_dirs", "older_than",
           "sync_filesystem"]

_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """Tell whether ``exc`` is an ``OSError`` for no space or quota exceeded."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> bool:
    """Flush everything written to the file system holding ``path`` in one call.

    Linux ``syncfs(2)``: one journal commit for many files, which is what a
    group commit of several written files needs (and since Linux 5.8 it
    reports write-back errors). Returns ``False`` where the call does not
    exist, so that the caller falls back to one ``fsync`` per file.

    Raises
    ------
    OSError
        When the flush failed (an I/O error, the disk full on write-back).
    """
    syncfs = _syncfs()
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)
    return True


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return function


@functools.cache
def io_threads() -> ThreadPoolExecutor:
    """Threads for calls that wait on the disk with the GIL released (fsync, unlink)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="storage-io")


def fsync_file(path: Path) -> None:
    """Flush the contents of the file at ``path`` to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int, *, sync: bool = True) -> None:
    """Create ``path`` and any missing parents, fsyncing each parent that changed.

    ``sync=False`` leaves the parents' fsyncs to a later flush of the whole
    file system (:func:`sync_filesystem`), as a group commit does.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue
        if sync:
            fsync_dir(folder.parent)


def older_than(path: Path, seconds: float) -> bool:
    """Tell whether ``path`` was last changed more than ``seconds`` ago.

    The change time (``st_ctime``) moves on a rename, so it measures how
    long an entry has sat in its current folder. A file that vanished in
    the meantime counts as not old (someone else is handling it).
    """
    if seconds <= 0:
        return True
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return time.time() - max(stat.st_ctime, stat.st_mtime) > seconds
