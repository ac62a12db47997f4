"""Faults at the node (RELIABILITY T11, T27), on SQLite and PostgreSQL.

- A dataset whose SOPInstanceUID is a path (``../../etc/cron.d/x``) is
  refused with 0xA900 before anything is written: no file outside the data
  folder, nothing spooled.
- The data folder's disk full: 0xA700, nothing half-written in the spool;
  once space frees the same C-STORE succeeds and is indexed. The disk is a
  real 2 MB tmpfs when this process may mount one (root), otherwise ENOSPC is
  injected where the spool makes a received file durable.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

import storage.spool
from storage.db import session_scope
from storage.models import Instance
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.procwatch import close_idle_connections, watched
from tests.tmpfs import can_mount, small_tmpfs
from tests.tmpfs import fill as fill_disk

TRAVERSAL = "../../etc/cron.d/x"


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's bytes as they are (not re-encoded by pydicom)."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def _store(node: Any, path_or_ds: Any) -> Any:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path_or_ds)
    finally:
        assoc.release()


def _indexed(node: Any) -> int:
    with session_scope(node.app.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _spooled_files(node: Any) -> list[Path]:
    return [p for p in (node.app.data_dir / "spool").rglob("*") if p.is_file()]


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _outside(node: Any, root: Path) -> set[Path]:
    """Files under ``root`` outside the node's data folder, but SQLite's own beside its database.

    SQLite keeps -wal and -shm files while any connection is open, and
    whether the node's threads hold one at a given moment is theirs to say.
    """
    return {p for p in _files_under(root) - _files_under(node.app.data_dir)
            if not p.name.endswith(("-wal", "-shm", "-journal"))}


@pytest.mark.usefixtures("send_raw")
def test_path_as_dataset_sop_instance_uid_gets_a900_and_nothing_is_written(
    make_node: Callable[..., Any], tmp_path: Path
) -> None:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    placeholder = "1.2.3.4.5.6.7.8.99"  # as long as the traversal, so lengths stay right
    assert len(placeholder) == len(TRAVERSAL)
    ds.SOPInstanceUID = placeholder
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    # the first one is the File Meta's (the request's UID, valid), the second the dataset's
    assert data.count(placeholder.encode()) == 2
    cut = data.rindex(placeholder.encode())
    crafted = tmp_path / "crafted.dcm"
    crafted.write_bytes(data[:cut] + TRAVERSAL.encode() + data[cut + len(TRAVERSAL):])
    close_idle_connections(node.app.engine)  # as watched() does at the end
    before = _outside(node, tmp_path)

    with watched(node):  # RSS, threads and descriptors back to their baseline (I4)
        status = _store(node, crafted)

    assert status.Status == 0xA900
    assert status.ErrorComment == "SOP Class or Instance UID malformed"
    assert not Path("/etc/cron.d/x").exists()
    after = _outside(node, tmp_path)
    assert after == before, f"written outside the data folder: {after - before}"
    assert not [p for p in _files_under(node.app.data_dir) if p.name == "x"]
    assert _spooled_files(node) == []
    assert node.app.spool.depth() == 0 and _indexed(node) == 0


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Any]]:
    """A data folder on a 2 MB disk, and ``fill() -> free()`` to use up and give back its space.

    ``tmpfs``: a real tmpfs (tests/tmpfs.py) when this process may mount one
    (otherwise it falls back to injection); ``injected``: the spool's durable
    write raises ENOSPC while the disk is "full".
    """
    folder = tmp_path / "small"
    if request.param == "tmpfs" and can_mount():
        with small_tmpfs(folder, 2):
            yield folder / "var", lambda: fill_disk(folder)
        return
    folder.mkdir()
    full = {"on": False}
    real = storage.spool.fsync_file

    def failing(path: Path) -> None:
        if full["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path)

    monkeypatch.setattr(storage.spool, "fsync_file", failing)

    def fill() -> Callable[[], None]:
        full["on"] = True
        return lambda: full.update(on=False)

    yield folder / "var", fill


def test_disk_full_gets_a700_keeps_nothing_and_recovers_when_space_frees(
    make_node: Callable[..., Any], tmp_path: Path, small_disk: tuple[Path, Any]
) -> None:
    data_dir, fill = small_disk
    node = make_node(**{"storage.data_dir": str(data_dir)})
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    try:
        free = fill()
        status = _store(node, ds)
        assert status.Status == 0xA700
        assert status.ErrorComment == "out of disk space"
        assert _spooled_files(node) == [], "nothing half-written may stay in the spool"
        assert node.app.spool.depth() == 0 and _indexed(node) == 0

        free()
        assert _store(node, ds).Status == 0x0000
        wait_until(lambda: _indexed(node) == 1, what="the instance indexed after space freed")
        wait_until(lambda: node.app.spool.depth() == 0, what="the spool drained")
    finally:
        node.stop()  # before the disk goes away
