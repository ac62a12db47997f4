"""The spool: received files made durable before Success, then handed to workers.

ARCHITECTURE.md, durability contract, point 1, and RELIABILITY.md I1: a
C-STORE gets Success only once the received bytes are in ``incoming/``,
having been written (or moved) there under a temporary name, fsync'd, and
renamed, with the folder fsync'd. Each entry is a data file ``<name>.dcm``
and its metadata (:mod:`storage.spoolmeta`): an extended attribute of the
data file, durable with its fsync, or where there are none a sidecar
``<name>.json``, renamed into a folder before the data file.

Folders, all on one file system so that renames are atomic::

    tmp/         being written; deleted by recover()
    incoming/    durable, waiting for a worker (oldest first)
    claimed/     taken by one worker (rename = claim); recover() puts back
    quarantine/  set aside with a <name>.reason text file (I2)

Names are generated (``<time_ns:020d>-<uuid4 hex>``, so they sort by arrival
time), never taken from a value a peer sent (I3).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

from ._fsutil import fsync_dir, fsync_file, io_threads, is_disk_full, make_dirs, older_than
from .errors import StorageError, StorageFull
from .spoolmeta import XATTR, SpoolMeta, has_meta_attribute, read_meta, set_meta

__all__ = ["XATTR", "Spool", "SpoolEntry", "SpoolMeta"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_DATA: Final = ".dcm"
_META: Final = ".json"
_REASON: Final = ".reason"
_NAME: Final = re.compile(r"\d{20}-[0-9a-f]{32}")
_FILE_MODE: Final = 0o600  # the spool holds originals, with PHI
_DIR_MODE: Final = 0o700


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled file: its generated name, where its files are, and its metadata."""

    name: str
    path: Path
    meta_path: Path
    meta: SpoolMeta


class Spool:
    """The spool folder ``root`` of a node; its four sub-folders are created when missing.

    pynetdicom's temporary files should live on the same file system, so
    that :meth:`accept` is a rename.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.tmp = self.root / "tmp"
        self.incoming = self.root / "incoming"
        self.claimed = self.root / "claimed"
        self.quarantined = self.root / "quarantine"
        self._waiting: deque[str] = deque()  # a listing of incoming/, taken from by claim()
        for folder in (self.tmp, self.incoming, self.claimed, self.quarantined):
            make_dirs(folder, _DIR_MODE)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- accepting -----------------------------------------------------------------

    def accept(self, src: Path, meta: SpoolMeta,
               verify: Callable[[], R | None] | None = None) -> SpoolEntry | R:
        """Move a received file into the spool durably (RELIABILITY.md I1); copy across devices.

        Parameters
        ----------
        src : pathlib.Path
            The received file, e.g. pynetdicom's ``event.dataset_path``.
        meta : SpoolMeta
            Written to the file's attribute, or to the sidecar.
        verify : Callable[[], R | None], optional
            A check of the received bytes, run while another thread fsyncs
            them; a refusal it returns is returned, and nothing is accepted.

        Returns
        -------
        SpoolEntry | R
            The entry in ``incoming/``, or ``verify``'s refusal.

        Raises
        ------
        StorageFull
            Out of space or quota: answer 0xA700 (PS3.4 B.2.3). Nothing is
            left in ``tmp/`` or ``incoming/``.
        OSError
            Any other failure to write; nothing is left behind either.
        """
        if set_meta(Path(src), meta):
            return self._accept_in_place(Path(src), meta, verify)
        refusal = verify() if verify is not None else None
        if refusal is not None:
            return refusal

        def place(target: Path) -> None:
            try:
                os.rename(src, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy(src, target)
                Path(src).unlink(missing_ok=True)
            os.chmod(target, _FILE_MODE)
            fsync_file(target)

        return self._accept(place, meta)

    def _accept_in_place(self, src: Path, meta: SpoolMeta,
                         verify: Callable[[], R | None] | None) -> SpoolEntry | R:
        """Accept a file carrying its metadata as an extended attribute: fsync, one rename.

        One fsync makes data and metadata durable (the attribute belongs to
        the inode), and the rename's folder fsync follows; no sidecar, no
        second file to sync. A file on another file system is copied instead.
        """
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        data, sidecar = self._files(self.incoming, name)
        try:
            os.chmod(src, _FILE_MODE)
            if verify is None:
                fsync_file(src)
            else:
                flushing = io_threads().submit(fsync_file, src)
                try:
                    refusal = verify()
                finally:
                    flushing.result()
                if refusal is not None:
                    os.removexattr(src, XATTR)
                    return refusal
            os.rename(src, data)
            fsync_dir(self.incoming)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                os.removexattr(src, XATTR)
                return self._accept_copy(src, meta)
            data.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise StorageFull(f"spool {self.root}: no space left to accept a file") from exc
            raise
        return SpoolEntry(name=name, path=data, meta_path=sidecar, meta=meta)

    def _accept_copy(self, src: Path, meta: SpoolMeta) -> SpoolEntry:
        def place(target: Path) -> None:
            _copy(src, target)
            src.unlink(missing_ok=True)
            fsync_file(target)

        return self._accept(place, meta)

    def accept_bytes(self, write: Callable[[BinaryIO], None], meta: SpoolMeta) -> SpoolEntry:
        """Like :meth:`accept`, for bytes that ``write`` writes to a new file."""
        def place(target: Path) -> None:
            with _create(target) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())

        return self._accept(place, meta)

    def _accept(self, place: Callable[[Path], None], meta: SpoolMeta) -> SpoolEntry:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        data_tmp, meta_tmp = self._files(self.tmp, name)
        data, sidecar = self._files(self.incoming, name)
        try:
            place(data_tmp)
            _write_synced(meta_tmp, meta.to_json())
            os.rename(meta_tmp, sidecar)
            os.rename(data_tmp, data)
            fsync_dir(self.incoming)
        except BaseException as exc:
            for leftover in (data_tmp, meta_tmp, data, sidecar):
                leftover.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise StorageFull(f"spool {self.root}: no space left to accept a file") from exc
            raise
        return SpoolEntry(name=name, path=data, meta_path=sidecar, meta=meta)

    # -- working -------------------------------------------------------------------

    def claim(self, only: Container[str] | None = None) -> SpoolEntry | None:
        """Take the oldest waiting entry for this worker alone.

        The claim is a rename from ``incoming/`` to ``claimed/``; of several
        workers (threads or processes) only one rename succeeds, and a loser
        tries the next entry. An entry whose sidecar cannot be read is
        quarantined with that reason and skipped.

        Parameters
        ----------
        only : Container[str] | None
            When given, only entries of these names are taken (an import
            processing what it spooled itself); others are left waiting.

        Returns
        -------
        SpoolEntry | None
            ``None`` when nothing (of ``only``) is waiting.
        """
        for name in self._candidates(only):
            data, sidecar = self._files(self.incoming, name)
            claimed, claimed_meta = self._files(self.claimed, name)
            try:
                os.rename(data, claimed)
            except FileNotFoundError:
                continue
            os.utime(claimed)  # the claim's age, for recover(min_age_seconds=...)
            try:
                os.rename(sidecar, claimed_meta)
            except FileNotFoundError:
                pass
            try:
                meta = read_meta(claimed, claimed_meta)
            except (OSError, StorageError) as exc:
                self._set_aside(name, self.claimed, f"spool metadata unreadable ({exc})")
                continue
            return SpoolEntry(name=name, path=claimed, meta_path=claimed_meta, meta=meta)
        return None

    def unclaim(self, entry: SpoolEntry) -> SpoolEntry:
        """Put a claimed entry back in ``incoming/`` to be tried again later."""
        _check_name(entry.name)
        data, sidecar = self._files(self.incoming, entry.name)
        try:
            os.rename(entry.meta_path, sidecar)
        except FileNotFoundError:  # the metadata is an attribute of the data file
            pass
        os.rename(entry.path, data)
        self._waiting.clear()  # list again: it is older than what the listing still holds
        return SpoolEntry(name=entry.name, path=data, meta_path=sidecar, meta=entry.meta)

    def release(self, entry: SpoolEntry) -> None:
        """Delete an entry whose instance is indexed (or was a repeat).

        The data file goes first, so a crash in between leaves only a
        sidecar, which :meth:`recover` removes.
        """
        _check_name(entry.name)
        entry.path.unlink(missing_ok=True)
        entry.meta_path.unlink(missing_ok=True)

    def release_all(self, entries: Sequence[SpoolEntry]) -> None:
        """Release several entries at once (unlinks run side by side: each waits on the disk)."""
        list(io_threads().map(self.release, entries))

    def quarantine(self, entry: SpoolEntry, reason: str) -> Path:
        """Set an entry aside with a reason (RELIABILITY.md I2); it is never dropped.

        Parameters
        ----------
        entry : SpoolEntry
            A claimed (or waiting) entry.
        reason : str
            Why, in words that hold no PHI; written to ``<name>.reason``.

        Returns
        -------
        pathlib.Path
            The data file's path in ``quarantine/``.
        """
        _check_name(entry.name)
        return self._set_aside(entry.name, entry.path.parent, reason)

    def _set_aside(self, name: str, folder: Path, reason: str) -> Path:
        data, sidecar = self._files(folder, name)
        target, target_meta = self._files(self.quarantined, name)
        _write_synced(self.quarantined / f"{name}{_REASON}",
                      reason.encode("utf-8", "replace") + b"\n", replace=True)
        try:
            os.rename(sidecar, target_meta)
        except FileNotFoundError:
            pass
        os.rename(data, target)
        fsync_dir(self.quarantined)
        logger.warning("spool quarantined spool=%s reason=%r", name, reason)
        return target

    def release_from_quarantine(self, name: str) -> SpoolEntry:
        """Send a quarantined entry that a person reviewed back to ``incoming/``, marked released.

        The sidecar is rewritten with ``"released": true`` (temporary name,
        fsync, rename) before the data file moves, so a crash in between
        leaves either a held entry or a waiting, released one; the reason
        file is removed last.

        Parameters
        ----------
        name : str
            The generated spool entry name (``study quarantine`` lists them).

        Returns
        -------
        SpoolEntry
            The entry in ``incoming/``, for the ingest workers.

        Raises
        ------
        StorageError
            When the name is not a generated one, or no such entry is held.
        """
        _check_name(name)
        held, held_meta = self._files(self.quarantined, name)
        if not held.exists():
            raise StorageError(f"spool quarantine: no held entry named {name}")
        try:
            meta = read_meta(held, held_meta)
        except OSError as exc:
            raise StorageError(f"spool quarantine: entry {name} has no readable metadata "
                               f"({exc.strerror})") from exc
        released = dataclasses.replace(meta, released=True)
        data, sidecar = self._files(self.incoming, name)
        staged = self.tmp / f"{name}{_META}"
        _write_synced(staged, released.to_json(), replace=True)
        os.rename(staged, sidecar)
        os.rename(held, data)
        held_meta.unlink(missing_ok=True)
        (self.quarantined / f"{name}{_REASON}").unlink(missing_ok=True)
        fsync_dir(self.incoming)
        fsync_dir(self.quarantined)
        logger.info("spool released from quarantine spool=%s", name)
        return SpoolEntry(name=name, path=data, meta_path=sidecar, meta=released)

    # -- start-up and monitoring ---------------------------------------------------

    def recover(self, *, min_age_seconds: float = 0.0) -> int:
        """Repair the spool after a crash; call it at start-up.

        Every claimed entry goes back to ``incoming/`` (a dead worker's
        claim; processing is idempotent, so it is simply done again),
        everything in ``tmp/`` is deleted (an accept that never answered
        Success), and sidecars without a data file are removed. When other
        live processes share the spool, pass ``min_age_seconds`` longer than
        any worker holds a claim, so that only stale files are touched.

        Returns
        -------
        int
            How many claimed entries went back to ``incoming/``.
        """
        for leftover in sorted(self.tmp.iterdir()):
            if older_than(leftover, min_age_seconds):
                leftover.unlink(missing_ok=True)
        returned = 0
        for name in self._names(self.claimed):
            data, sidecar = self._files(self.claimed, name)
            if not older_than(data, min_age_seconds):
                continue
            waiting, waiting_meta = self._files(self.incoming, name)
            try:
                os.rename(sidecar, waiting_meta)
            except FileNotFoundError:
                if not waiting_meta.exists() and not has_meta_attribute(data):
                    self._set_aside(name, self.claimed, "spool metadata missing")
                    continue
            os.rename(data, waiting)
            returned += 1
        for folder in (self.incoming, self.claimed):
            for sidecar in folder.glob(f"*{_META}"):
                if not sidecar.with_suffix(_DATA).exists() and older_than(sidecar, min_age_seconds):
                    sidecar.unlink(missing_ok=True)
        fsync_dir(self.incoming)
        self._waiting.clear()
        if returned:
            logger.info("spool recovered claimed=%d", returned)
        return returned

    def depth(self) -> int:
        """Return how many entries wait in ``incoming/`` (for back-pressure)."""
        return sum(1 for _ in self.incoming.glob(f"*{_DATA}"))

    def oldest(self) -> datetime | None:
        """When the oldest entry waiting or being ingested was accepted (its name says)."""
        names = [n for folder in (self.incoming, self.claimed) for n in self._names(folder)[:1]]
        return datetime.fromtimestamp(int(min(names)[:20]) / 1e9, UTC) if names else None

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _files(folder: Path, name: str) -> tuple[Path, Path]:
        return folder / f"{name}{_DATA}", folder / f"{name}{_META}"

    def _candidates(self, only: Container[str] | None) -> Iterator[str]:
        """Waiting names, oldest first; one listing serves many claims (unclaim and recover
        clear it, so that what they put back is taken first)."""
        if only is not None:
            yield from (name for name in self._names(self.incoming) if name in only)
            return
        if not self._waiting:
            self._waiting.extend(self._names(self.incoming))
        while True:
            try:
                yield self._waiting.popleft()
            except IndexError:
                return

    @staticmethod
    def _names(folder: Path) -> list[str]:
        names = (entry.name[: -len(_DATA)] for entry in os.scandir(folder)
                 if entry.name.endswith(_DATA))
        return sorted(name for name in names if _NAME.fullmatch(name))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise StorageError(f"spool entry name: expected a generated name, got {name!r}")


def _create(path: Path, *, replace: bool = False) -> BinaryIO:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    return os.fdopen(os.open(path, flags, _FILE_MODE), "wb")


def _write_synced(path: Path, data: bytes, *, replace: bool = False) -> None:
    with _create(path, replace=replace) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _copy(src: Path, target: Path) -> None:
    with open(src, "rb") as source, _create(target) as handle:
        shutil.copyfileobj(source, handle)
        handle.flush()
