"""Bad datasets sent to the running node (RELIABILITY T14-T17), on SQLite and PostgreSQL.

Each case is a C-STORE from the raw peer with hand-made bytes
(:mod:`tests.craft`), asserted end to end: the DIMSE status and Error
Comment, the log line's reason (with no PHI), nothing left in the spool,
no index row, the ``store-refused`` audit record; then the next, valid
instance is stored, and the process's RSS, threads and descriptors are back
to their baseline (:mod:`tests.procwatch`).

- T14: a defined length of 0xFFFFFFF0 in a 1 KB dataset, at the top level
  and inside an item -> 0xC000; an undefined-length sequence whose items
  never end -> 0xC000 when the data ends, and an A-ABORT as soon as the
  dataset passes ``limits.max_dataset_mb`` when the peer keeps streaming.
- T15: sequences nested 65, 300 and 10,000 deep (defined and undefined
  lengths) against ``anonymizer.max_sequence_depth`` = 64 -> 0xC000; 64
  deep is stored.
- T16: Rows as UL 0xFFFFFFFF -> 0xA900 (bounds-checked); PatientName as OB,
  an odd value length, an out-of-range Instance Number -> stored,
  de-identified, indexed (the number left out); an unknown VR "ZZ" -> 0xC000.
- T17: an image without Pixel Data, with an empty one, or shorter than
  Rows x Columns x frames says -> 0xA900 (the policy: README "Refusals").
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from storage import audit
from storage.db import session_scope
from storage.models import Instance, Patient, QuarantineEntry, Series, Study
from tests.conftest import wait_until
from tests.craft import UNDEFINED, element, encode, item, nested, one_ct, store, stream_store
from tests.procwatch import watched

PIXEL_DATA = 0x7FE00010
REFERENCED_IMAGES = 0x00081140
PRIVATE_UN = 0x00091001
STUDY_DESCRIPTION = 0x00081030


@pytest.fixture
def node(make_node: Callable[..., Any], tmp_path: Path) -> Any:
    """A node with a 1 MB dataset cap, warmed up by one stored instance."""
    node = make_node(**{"limits.max_dataset_mb": 1})
    good = one_ct(tmp_path / "warm", seed=90)
    assert store(node.port, good, encode(good)) == 0x0000
    wait_until(lambda: _indexed(node) == 1, what="the warm-up instance indexed")
    return node


def _indexed(node: Any) -> int:
    with session_scope(node.app.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _spool_files(node: Any) -> list[Path]:
    return [p for p in (node.app.data_dir / "spool").rglob("*") if p.is_file()]


def _refusals(node: Any) -> list[str]:
    with session_scope(node.app.engine) as session:
        return [e.detail for e in audit.list_events(session, event="store-refused")]


def _then_the_next_is_stored(node: Any, tmp_path: Path, seed: int) -> None:
    """The node still stores: a valid instance is acknowledged and indexed."""
    before = _indexed(node)
    good = one_ct(tmp_path / f"next{seed}", seed=seed)
    assert store(node.port, good, encode(good)) == 0x0000
    wait_until(lambda: _indexed(node) == before + 1, what="the next instance indexed")


def _assert_refused(node: Any, caplog: pytest.LogCaptureFixture, ds: Dataset,
                    status: int | None, expected: int, reason: str) -> None:
    assert status == expected, f"status {status!r}, expected 0x{expected:04X}"
    assert f"status=0x{expected:04X} reason={reason!r}" in caplog.text
    assert not [t for t in (str(ds.PatientName), str(ds.PatientID)) if t in caplog.text]
    assert _spool_files(node) == [], "nothing half-written may stay in the spool"
    assert _indexed(node) == 1  # the warm-up instance only
    assert any(f"reason={reason}" in detail for detail in _refusals(node))


def _without_pixels(tmp_path: Path, seed: int) -> Dataset:
    ds = one_ct(tmp_path / f"ct{seed}", seed=seed)
    del ds.PixelData
    return ds


# -- T14 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["pixel data", "mid-dataset", "inside an item"])
def test_a_huge_defined_length_in_a_small_dataset_gets_c000(
        node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str) -> None:
    ds = _without_pixels(tmp_path, 1)
    huge = element(PRIVATE_UN, "UN", b"\0" * 16, length=0xFFFFFFF0)
    crafted = {
        "pixel data": {PIXEL_DATA: element(PIXEL_DATA, "OW", b"\0" * 64, length=0xFFFFFFF0)},
        "mid-dataset": {PRIVATE_UN: huge},
        "inside an item": {REFERENCED_IMAGES: element(REFERENCED_IMAGES, "SQ", item(huge))},
    }[where]
    data = encode(ds, crafted)
    assert len(data) < 2048
    with watched(node):
        status = store(node.port, ds, data)
        reason = "dataset cannot be parsed" if where == "inside an item" else \
            "dataset is truncated"
        _assert_refused(node, caplog, ds, status, 0xC000, reason)
        _then_the_next_is_stored(node, tmp_path, 2)


def test_an_item_stream_without_its_delimiter_gets_c000(
        node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = _without_pixels(tmp_path, 3)
    body = element(REFERENCED_IMAGES, "SQ", length=UNDEFINED) + item(
        element(0x00081150, "UI", b"1.2.3\0")) * 40  # no sequence delimiter: the data ends
    with watched(node):
        status = store(node.port, ds, encode(ds, {REFERENCED_IMAGES: body}))
        _assert_refused(node, caplog, ds, status, 0xC000, "dataset cannot be parsed")
        _then_the_next_is_stored(node, tmp_path, 4)


@pytest.mark.slow
def test_an_endless_item_stream_is_aborted_at_the_cap_with_memory_flat(
        make_node: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 1 GB offered against a 1 MB cap: an A-ABORT once the cap is passed, what
    follows discarded unread, the connection closed at the ARTIM timeout (one second)."""
    node = make_node(**{"limits.max_dataset_mb": 1, "limits.acse_timeout": 1})
    ds = _without_pixels(tmp_path, 5)
    head = encode(ds, {REFERENCED_IMAGES: element(REFERENCED_IMAGES, "SQ", length=UNDEFINED)
                       + element(0xFFFEE000, "UN", length=UNDEFINED)[:8]})
    receiving = node.app.spool.root / "receiving"  # where serve has pynetdicom stream
    receiving.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    with watched(node, rss_kib=32 * 1024):
        sent, replies = stream_store(node.port, ds, head, total=1024 * 1024 * 1024)
        assert sent < 1024 * 1024 * 1024, "the node never closed the connection"
        assert [getattr(r, "abort", None) for r in replies] == [(0, 0)], replies
        assert "state=aborted reason='dataset exceeds the size limit'" in caplog.text
        wait_until(lambda: _spool_files(node) == [], what="the partial receive removed")
        assert not list(receiving.iterdir())
        assert _indexed(node) == 0
        # The reactor thread queues this record for the audit writer: it lands shortly after.
        wait_until(lambda: "status=A-ABORT reason=dataset exceeds the size limit"
                   in _refusals(node), what="the aborted store audited")
        _then_the_next_is_stored(node, tmp_path, 6)


def test_a_dataset_over_the_cap_that_ends_gets_a700(
        node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = _without_pixels(tmp_path, 7)
    data = encode(ds, {PRIVATE_UN: element(PRIVATE_UN, "UN", b"\0" * (1024 * 1024 + 2))})
    with watched(node):
        status = store(node.port, ds, data)
        _assert_refused(node, caplog, ds, status, 0xA700, "dataset exceeds the size limit")


# -- T15 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,undefined", [(65, True), (65, False), (300, True),
                                             (300, False), (10_000, True), (10_000, False)])
def test_sequences_nested_past_the_limit_get_c000(
        node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, depth: int,
        undefined: bool) -> None:
    ds = _without_pixels(tmp_path, 8)
    ds.PixelData = b"\0" * (64 * 64 * 2)
    ds["PixelData"].VR = "OW"
    data = encode(ds, {REFERENCED_IMAGES: nested(depth, undefined=undefined)})
    with watched(node):
        status = store(node.port, ds, data)
        _assert_refused(node, caplog, ds, status, 0xC000, "sequence nesting too deep")
        assert "RecursionError" not in caplog.text
        _then_the_next_is_stored(node, tmp_path, 9)


def test_sequences_nested_at_the_limit_are_stored(node: Any, tmp_path: Path) -> None:
    ds = one_ct(tmp_path / "deep", seed=10)
    assert store(node.port, ds, encode(ds, {REFERENCED_IMAGES: nested(64, undefined=True)})
                 ) == 0x0000
    wait_until(lambda: _indexed(node) == 2, what="the 64-deep instance indexed")


# -- T16 ----------------------------------------------------------------------------------

def test_rows_as_ul_ffffffff_gets_a900(node: Any, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    ds = one_ct(tmp_path / "rows", seed=11)
    data = encode(ds, {0x00280010: element(0x00280010, "UL", struct.pack("<L", 0xFFFFFFFF))})
    with watched(node):
        status = store(node.port, ds, data)
        _assert_refused(node, caplog, ds, status, 0xA900,
                        "image header values missing or out of range")


def test_an_unknown_vr_gets_c000(node: Any, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    ds = one_ct(tmp_path / "zz", seed=12)
    data = encode(ds, {STUDY_DESCRIPTION: element(STUDY_DESCRIPTION, "ZZ", b"CHEST ")})
    with watched(node):
        status = store(node.port, ds, data)
        _assert_refused(node, caplog, ds, status, 0xC000, "dataset is truncated")
        _then_the_next_is_stored(node, tmp_path, 13)


def test_wrong_vrs_odd_lengths_and_huge_numbers_are_stored_deterministically(
        node: Any, tmp_path: Path) -> None:
    """PatientName as OB, an odd-length Body Part, IS values past 2^31: stored,
    de-identified and indexed, the numbers left out of the index (IS is -2^31..2^31-1)."""
    ds = one_ct(tmp_path / "vrs", seed=14)
    name = str(ds.PatientName).encode()
    data = encode(ds, {
        0x00100010: element(0x00100010, "OB", name + b"\0" * (len(name) % 2)),
        0x00180015: element(0x00180015, "CS", b"CHEST"),  # 5 bytes: odd
        0x00200011: element(0x00200011, "IS", b"99999999999 "),
        0x00200013: element(0x00200013, "IS", b"-99999999999"),
    })
    with watched(node):
        assert store(node.port, ds, data) == 0x0000
        wait_until(lambda: _indexed(node) == 2, what="the instance indexed")
    with session_scope(node.app.engine) as session:
        row = session.execute(
            select(Instance.instance_number, Series.series_number, Series.body_part_examined,
                   Patient.patient_name)
            .join(Series, Instance.series_fk == Series.id).join(Study).join(Patient)
            .order_by(Instance.id.desc()).limit(1)).one()
        assert tuple(row[:3]) == (None, None, "CHEST")
        assert row.patient_name.startswith("ANON")
        assert session.scalar(select(func.count()).select_from(QuarantineEntry)) == 0
    stored = next((node.app.data_dir / "store").rglob("*.dcm")).read_bytes()
    assert name not in stored


# -- T17 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pixels,reason", [
    (None, "Pixel Data missing"),
    (b"", "Pixel Data empty"),
    (b"\0" * (64 * 64 * 2), "Pixel Data shorter than the image header says"),  # 3 frames said
    (b"\0" * 100, "Pixel Data shorter than the image header says"),
])
def test_an_image_without_its_pixels_gets_a900(
        node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, pixels: bytes | None,
        reason: str) -> None:
    ds = _without_pixels(tmp_path, 15)
    crafted: dict[int, bytes] = {}
    if pixels is not None:
        crafted[PIXEL_DATA] = element(PIXEL_DATA, "OW", pixels)
    if reason.endswith("says") and len(pixels or b"") == 64 * 64 * 2:
        crafted[0x00280008] = element(0x00280008, "IS", b"3 ")
    with watched(node):
        status = store(node.port, ds, encode(ds, crafted))
        _assert_refused(node, caplog, ds, status, 0xA900, reason)
