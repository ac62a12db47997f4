"""FileStore: atomic, write-once files named from generated identifiers (I1, I3)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO

import pytest

from storage.errors import StorageError, StorageFull
from storage.filestore import FileStore


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_write_returns_path_size_and_digest(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    stored = store.write(lambda handle: handle.write(b"DICM" * 1000))
    assert re.fullmatch(r"([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{28}\.dcm", stored.path)
    assert stored.size == 4000
    assert stored.sha256 == hashlib.sha256(b"DICM" * 1000).hexdigest()
    assert store.path_of(stored.path).read_bytes() == b"DICM" * 1000
    with store.open(stored.path) as handle:
        assert handle.read(4) == b"DICM"
    assert _files(store.root) == [store.path_of(stored.path)]


def test_each_write_gets_a_new_name(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    paths = {store.write(lambda handle: handle.write(b"same")).path for _ in range(20)}
    assert len(paths) == 20


def test_digest_is_right_when_the_writer_seeks_back(tmp_path: Path) -> None:
    """pydicom patches item lengths by seeking back; the digest must cover the final bytes."""

    def fill(handle: BinaryIO) -> None:
        handle.write(b"\xff\xff\xff\xff")
        handle.write(b"payload")
        end = handle.tell()
        handle.seek(0)
        handle.write((7).to_bytes(4, "little"))
        handle.seek(end)
        handle.write(b"tail")

    store = FileStore(tmp_path)
    stored = store.write(fill)
    expected = (7).to_bytes(4, "little") + b"payload" + b"tail"
    assert store.path_of(stored.path).read_bytes() == expected
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    assert stored.size == len(expected)


def test_failing_fill_leaves_no_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")

    def fill(handle: BinaryIO) -> None:
        handle.write(b"half of it")
        raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        store.write(fill)
    assert _files(store.root) == []


def test_disk_full_is_storage_full_and_leaves_no_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")

    def fill(handle: BinaryIO) -> None:
        handle.write(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(StorageFull) as caught:
        store.write(fill)
    assert isinstance(caught.value, StorageError)
    assert isinstance(caught.value.__cause__, OSError)
    assert _files(store.root) == []


def test_disk_full_during_fsync_leaves_no_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "store")

    def full(fd: int) -> None:
        raise OSError(errno.EDQUOT, "quota")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageFull):
        store.write(lambda handle: handle.write(b"abc"))
    monkeypatch.undo()
    assert _files(store.root) == []


@pytest.mark.parametrize("rel", ["../outside.dcm", "ab/../../x.dcm", "/etc/passwd", "",
                                 "ab\\..\\x", "a\0b"])
def test_paths_outside_the_store_are_refused(tmp_path: Path, rel: str) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(StorageError, match="file store path: expected"):
        store.path_of(rel)
    with pytest.raises(StorageError):
        store.remove(rel)
    with pytest.raises(StorageError):
        store.open(rel)


def test_remove(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    stored = store.write(lambda handle: handle.write(b"abc"))
    assert store.remove(stored.path) is True
    assert store.remove(stored.path) is False
    assert not store.path_of(stored.path).exists()


def test_sweep_removes_only_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    kept = store.write(lambda handle: handle.write(b"keep"))
    leftover = store.root / "aa" / "bb" / ".aabb0000000000000000000000000000.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"crashed mid-write")
    assert store.sweep_temporary(min_age_seconds=3600) == 0
    assert leftover.exists()
    assert store.sweep_temporary() == 1
    assert not leftover.exists()
    assert store.path_of(kept.path).read_bytes() == b"keep"


def test_a_write_under_a_key_is_not_blocked_by_another_writer_of_that_key(
        tmp_path: Path) -> None:
    """A writer of the same key killed mid-write (or still at work elsewhere) leaves its
    temporary file; the next write of that key must still go through (the file's name is
    the key's, the temporary's is the writer's own)."""
    store = FileStore(tmp_path)
    crashed: list[Path] = []

    def killed_mid_write(handle: BinaryIO) -> None:
        handle.write(b"half")
        handle.flush()
        [temp] = store.root.glob("*/*/.*.tmp")
        os.link(temp, temp.with_name(".kept" + temp.name))  # what a kill -9 would leave
        crashed.append(temp.with_name(".kept" + temp.name))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write(killed_mid_write, key="2.25.1|abc")
    os.rename(crashed[0], crashed[0].with_name(crashed[0].name[len(".kept"):]))
    stored = store.write(lambda handle: handle.write(b"whole"), key="2.25.1|abc")
    assert store.path_of(stored.path).read_bytes() == b"whole"
    assert len(list(store.root.glob("*/*/.*.tmp"))) == 1, "the crashed writer's leftover stays"
    assert store.sweep_temporary() == 1
