"""Spool: durable accept, exclusive claim, release, quarantine and recovery (I1, I2, I3)."""

from __future__ import annotations

import errno
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest

import storage.spool
import storage.spoolmeta
from storage.errors import StorageError, StorageFull
from storage.spool import XATTR, Spool, SpoolEntry, SpoolMeta
from storage.spoolmeta import read_meta

META = SpoolMeta(
    calling_ae_title="MODALITY1",
    called_ae_title="GATEWAY",
    source_peer="clinic-a",
    received_at=datetime(2026, 1, 2, 10, 15, tzinfo=UTC),
    peer_address="192.0.2.10",
)


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _received(tmp_path: Path, data: bytes = b"received bytes") -> Path:
    folder = tmp_path / "pynetdicom-temp"
    folder.mkdir(exist_ok=True)
    path = folder / f"peer-named-{len(list(folder.iterdir()))}.dcm"
    path.write_bytes(data)
    return path


@pytest.fixture(params=["attribute", "sidecar"])
def spool(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Spool:
    """A spool keeping metadata as an extended attribute, and one on a file system without."""
    if request.param == "sidecar":
        monkeypatch.setattr(storage.spool, "set_meta", lambda path, meta: False)
    return Spool(tmp_path / "spool")


def _attribute_mode() -> bool:
    return storage.spool.set_meta is storage.spoolmeta.set_meta


def test_accept_moves_the_file_into_incoming_with_its_metadata(spool: Spool,
                                                               tmp_path: Path) -> None:
    src = _received(tmp_path)
    entry = spool.accept(src, META)
    assert not src.exists()
    assert entry.path.parent == spool.incoming
    assert entry.path.read_bytes() == b"received bytes"
    assert read_meta(entry.path, entry.meta_path) == META
    if _attribute_mode():  # one file, its metadata durable with its own fsync
        assert _names(spool.incoming) == [f"{entry.name}.dcm"]
        assert SpoolMeta.from_json(os.getxattr(entry.path, XATTR)) == META
    else:
        assert SpoolMeta.from_json(entry.meta_path.read_bytes()) == META
        assert _names(spool.incoming) == [f"{entry.name}.dcm", f"{entry.name}.json"]
    assert _names(spool.tmp) == []
    assert "peer-named" not in entry.name
    assert oct(entry.path.stat().st_mode & 0o777) == "0o600"
    assert spool.depth() == 1


def test_accept_copies_across_file_systems(spool: Spool, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = _received(tmp_path)
    real_rename = os.rename

    def rename(a: str | Path, b: str | Path) -> None:
        if Path(a) == src:
            raise OSError(errno.EXDEV, "cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    entry = spool.accept(src, META)
    monkeypatch.undo()
    assert entry.path.read_bytes() == b"received bytes"
    assert not src.exists()


def test_accept_bytes(spool: Spool) -> None:
    entry = spool.accept_bytes(lambda handle: handle.write(b"in memory"), META)
    assert entry.path.read_bytes() == b"in memory"
    assert spool.depth() == 1


def test_disk_full_while_writing_leaves_nothing(spool: Spool) -> None:
    def write(handle: BinaryIO) -> None:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(StorageFull):
        spool.accept_bytes(write, META)
    assert _names(spool.incoming) == []
    assert _names(spool.tmp) == []


def test_disk_full_while_writing_the_sidecar_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage.spool, "set_meta", lambda path, meta: False)
    spool = Spool(tmp_path / "spool")
    src = _received(tmp_path)
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the data file's fsync passes, the sidecar's fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageFull):
        spool.accept(src, META)
    monkeypatch.undo()
    assert calls["n"] == 2
    assert _names(spool.incoming) == []
    assert _names(spool.tmp) == []
    assert spool.claim() is None


def test_disk_full_on_the_fsync_leaves_nothing_in_incoming(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(storage.spool, "fsync_file", full)
    with pytest.raises(StorageFull):
        spool.accept(_received(tmp_path), META)
    assert _names(spool.incoming) == [] and _names(spool.tmp) == []
    assert spool.claim() is None


def test_other_write_errors_propagate_and_leave_nothing(spool: Spool) -> None:
    def write(handle: BinaryIO) -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError) as caught:
        spool.accept_bytes(write, META)
    assert not isinstance(caught.value, StorageError)
    assert _names(spool.incoming) == [] and _names(spool.tmp) == []


def test_claim_takes_the_oldest_first(spool: Spool, tmp_path: Path) -> None:
    first = spool.accept(_received(tmp_path, b"1"), META)
    second = spool.accept(_received(tmp_path, b"2"), META)
    claimed = spool.claim()
    assert claimed is not None
    assert claimed.name == first.name
    assert claimed.path.parent == spool.claimed
    assert claimed.meta == META
    assert claimed.path.read_bytes() == b"1"
    assert spool.depth() == 1
    again = spool.claim()
    assert again is not None and again.name == second.name
    assert spool.claim() is None


def test_release_removes_data_and_sidecar(spool: Spool, tmp_path: Path) -> None:
    spool.accept(_received(tmp_path), META)
    entry = spool.claim()
    assert entry is not None
    spool.release(entry)
    assert _names(spool.claimed) == [] and _names(spool.incoming) == []


def test_unclaim_puts_the_entry_back(spool: Spool, tmp_path: Path) -> None:
    spool.accept(_received(tmp_path), META)
    entry = spool.claim()
    assert entry is not None
    back = spool.unclaim(entry)
    assert back.path.parent == spool.incoming and back.path.exists()
    assert read_meta(back.path, back.meta_path) == META
    retaken = spool.claim()
    assert retaken is not None and retaken.name == entry.name


def test_quarantine_keeps_the_files_and_the_reason(spool: Spool, tmp_path: Path) -> None:
    spool.accept(_received(tmp_path), META)
    entry = spool.claim()
    assert entry is not None
    moved = spool.quarantine(entry, "BurnedInAnnotation is YES")
    assert moved == spool.quarantined / f"{entry.name}.dcm"
    assert moved.read_bytes() == b"received bytes"
    assert read_meta(moved, spool.quarantined / f"{entry.name}.json") == META
    reason = (spool.quarantined / f"{entry.name}.reason").read_text()
    assert reason == "BurnedInAnnotation is YES\n"
    assert _names(spool.claimed) == []
    assert spool.claim() is None


def test_unreadable_metadata_is_quarantined_not_returned(spool: Spool, tmp_path: Path) -> None:
    entry = spool.accept(_received(tmp_path), META)
    if entry.meta_path.exists():
        entry.meta_path.write_text("{not json")
    else:
        os.setxattr(entry.path, XATTR, b"{not json")
    assert spool.claim() is None
    assert (spool.quarantined / f"{entry.name}.dcm").exists()
    assert "metadata unreadable" in (spool.quarantined / f"{entry.name}.reason").read_text()


def test_recover_returns_claims_and_clears_tmp(spool: Spool, tmp_path: Path) -> None:
    for _ in range(3):
        spool.accept(_received(tmp_path), META)
    claimed = [spool.claim(), spool.claim()]
    assert all(entry is not None for entry in claimed)
    (spool.tmp / ("00000000000000000001-" + "0" * 32 + ".dcm")).write_bytes(b"half")
    orphan = spool.claimed / ("00000000000000000002-" + "1" * 32 + ".json")
    orphan.write_text("{}")
    assert spool.recover(min_age_seconds=3600) == 0  # a live worker's claims stay
    assert spool.recover() == 2
    assert _names(spool.tmp) == [] and _names(spool.claimed) == []
    assert spool.depth() == 3
    names = [entry.name for entry in claimed if entry is not None]
    again = [spool.claim(), spool.claim()]
    assert [entry.name for entry in again if entry is not None] == names


def test_recover_after_a_crash_between_the_two_claim_renames(spool: Spool,
                                                              tmp_path: Path) -> None:
    entry = spool.accept(_received(tmp_path), META)
    os.rename(entry.path, spool.claimed / entry.path.name)  # the sidecar stayed behind
    assert spool.recover() == 1
    back = spool.claim()
    assert back is not None and back.meta == META


def test_recover_sets_aside_a_claim_without_any_metadata(spool: Spool, tmp_path: Path) -> None:
    entry = spool.accept(_received(tmp_path), META)
    os.rename(entry.path, spool.claimed / entry.path.name)
    entry.meta_path.unlink(missing_ok=True)
    if XATTR in os.listxattr(spool.claimed / entry.path.name):
        os.removexattr(spool.claimed / entry.path.name, XATTR)
    assert spool.recover() == 0
    assert "metadata missing" in (spool.quarantined / f"{entry.name}.reason").read_text()


def test_two_claimers_never_get_the_same_entry(spool: Spool) -> None:
    count = 200
    for index in range(count):
        spool.accept_bytes(lambda handle, i=index: handle.write(str(i).encode()), META)
    taken: list[list[SpoolEntry]] = [[] for _ in range(4)]
    barrier = threading.Barrier(len(taken))

    def work(mine: list[SpoolEntry]) -> None:
        barrier.wait()
        while (entry := spool.claim()) is not None:
            mine.append(entry)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    names = [entry.name for mine in taken for entry in mine]
    assert len(names) == count
    assert len(set(names)) == count
    contents = sorted(int(entry.path.read_bytes()) for mine in taken for entry in mine)
    assert contents == list(range(count))


def test_entry_names_are_checked(spool: Spool, tmp_path: Path) -> None:
    bogus = SpoolEntry(name="../../etc/passwd", path=tmp_path / "x", meta_path=tmp_path / "y",
                       meta=META)
    with pytest.raises(StorageError, match="spool entry name"):
        spool.release(bogus)


def test_sidecar_without_timezone_is_refused() -> None:
    naive = META.to_json().replace(b"+00:00", b"")
    with pytest.raises(StorageError, match="timezone-aware"):
        SpoolMeta.from_json(naive)


def test_a_refusal_from_verify_accepts_nothing_and_leaves_the_file_to_its_owner(
        spool: Spool, tmp_path: Path) -> None:
    src = _received(tmp_path)
    assert spool.accept(src, META, verify=lambda: "refused") == "refused"
    assert src.exists() and _names(spool.incoming) == [] and spool.claim() is None
    assert XATTR not in os.listxattr(src)


def test_verify_runs_while_another_thread_fsyncs_the_file(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: dict[str, int] = {}
    real = storage.spool.fsync_file

    def recording(path: Path) -> None:
        threads.setdefault("fsync", threading.get_ident())
        real(path)

    def verify() -> None:
        threads["verify"] = threading.get_ident()

    monkeypatch.setattr(storage.spool, "fsync_file", recording)
    entry = spool.accept(_received(tmp_path), META, verify=verify)
    assert isinstance(entry, SpoolEntry) and entry.path.exists()
    assert threads["verify"] == threading.get_ident()
    if _attribute_mode():
        assert threads["fsync"] != threads["verify"]
