"""The file store's disk full while the spool has room (RELIABILITY T27; I1, I2).

The spool (``storage.spool_dir``) and the file store (``storage.data_dir``)
may be on different file systems. When only the store's is full, a C-STORE
is still answered 0x0000 (its bytes are durable in the spool: durability
contract 1), the ingest worker cannot write the de-identified file
(:class:`storage.errors.StorageFull`) and puts the entry back, leaving no
file and no row, and tries again after its back-off; ``status`` reports the
disk (the alarm); forwarding of what was already stored and routed goes on.
Once space frees, the waiting instance is indexed and forwarded too. The store is a
real 8 MB tmpfs (tests/tmpfs.py). SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from gateway.forwarder import run_due
from gateway.health import check
from gateway.node import Node
from gateway.router import route_stable
from storage.db import session_scope
from storage.models import Instance
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.sink import StoreSink, route_all_ct
from tests.tmpfs import fill, small_tmpfs

pytestmark = pytest.mark.slow  # waits out the ingest worker's back-off: CI


def _store(node: Node, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(dcmread(path)).Status) for path in paths]
    finally:
        assoc.release()


def _indexed(node: Node) -> set[str]:
    with session_scope(node.app.engine, readonly=True) as session:
        return set(session.scalars(select(Instance.sop_instance_uid)))


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def _stored_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "store").rglob("*") if p.is_file())


def _disk_problems(node: Node) -> list[str]:
    return [p for p in check(node.app).problems if p.startswith("disk:")]


def test_a_full_store_disk_keeps_acknowledging_raises_the_alarm_and_forwarding_goes_on(
        make_node: Callable[..., Node], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "store-disk", 8) as disk, StoreSink() as sink:
        node = make_node(**{"storage.data_dir": str(disk / "var"),
                            "storage.spool_dir": str(tmp_path / "spool"),
                            "status.min_free_disk_mb": 1,
                            "forward.poll_seconds": 3600, "forward.stable_after_seconds": 1})
        try:
            route_all_ct(node.app.engine, sink.port)
            first = make_clinic_study(tmp_path / "first", series=1, per_series=2, jpeg=False)
            assert _store(node, list(first.files.values())) == [0x0000] * 2
            wait_until(lambda: len(_indexed(node)) == 2 and node.app.spool.depth() == 0,
                       what="the first study indexed")
            stored_before = _stored_files(node.app.data_dir)
            assert _disk_problems(node) == []
            assert route_stable(node.app, _later()) == 1  # its job waits to be sent

            free = fill(disk)
            later = make_clinic_study(tmp_path / "later", series=1, per_series=1, jpeg=False,
                                      seed=7)
            # the spool has room: acknowledged, durable there (the worker may hold it already)
            assert _store(node, list(later.files.values())) == [0x0000]
            # the worker tries, cannot write the store file, and leaves nothing behind
            wait_until(lambda: node.app.spool.depth() == 1 and len(_indexed(node)) == 2
                       and _stored_files(node.app.data_dir) == stored_before, timeout=10,
                       what="the entry back in the spool, no file, no row")
            [alarm] = _disk_problems(node)
            assert str(node.app.data_dir) in alarm and "status.min_free_disk_mb=1" in alarm
            health = check(node.app)  # the spool's own file system is reported beside it
            assert health.spool_disk is not None and health.spool_disk[0] == node.app.spool.root
            assert health.to_dict()["disk"]["spool"]["free_bytes"] > 1024 * 1024
            # what was stored and routed before still goes out
            assert run_due(node.app, now=_later()).done == 1
            assert sorted(sink.offered) == sorted(_indexed(node))

            free()
            wait_until(lambda: len(_indexed(node)) == 3 and node.app.spool.depth() == 0,
                       timeout=30, what="the waiting instance indexed once space freed")
            assert _disk_problems(node) == []
            assert route_stable(node.app, _later()) == 1
            assert run_due(node.app, now=_later()).done == 1
            assert sorted(sink.offered) == sorted(_indexed(node)), "each instance once"
        finally:
            node.stop()  # before the disk goes away
