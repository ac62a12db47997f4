"""The receiving node in-process, driven by pynetdicom SCUs (SQLite and PostgreSQL).

C-ECHO; C-STORE acknowledged only once durable, then de-identified and
indexed by the ingest workers; the statuses of PS3.4 B.2.3 for bad input;
association rejection for unknown callers where store is closed.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
import pytest
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from storage.db import session_scope
from storage.models import Instance
from tests.conftest import wait_until
from tests.corpus import Corpus, make_clinic_study
from tests.procwatch import watched
from tests.rawpeer import Closed, RawPeer, associate_rq


def _scu(ae_title: str = "CLINIC") -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


def _indexed(node: object) -> int:
    with session_scope(node.app.engine) as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_echo(make_node: Callable[..., object]) -> None:
    node = make_node()
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


def test_stopping_aborts_open_associations_and_waits_for_their_threads(
        make_node: Callable[..., object]) -> None:
    """Node.stop() (gateway.reuseport.close_listener): an association still open gets an
    A-ABORT, and its thread is gone when stop returns, before the engine is closed."""
    node = make_node()
    with RawPeer(node.port) as peer:  # type: ignore[attr-defined]
        peer.send(associate_rq())
        assert getattr(peer.receive(), "pdu_type", None) == 0x02
        acceptors = [t for t in threading.enumerate() if "AcceptorThread" in t.name]
        assert acceptors, "the open association has a thread"
        node.stop()  # type: ignore[attr-defined]
        assert [t.name for t in acceptors if t.is_alive()] == []
        reply = peer.receive()
        assert isinstance(reply, Closed) or reply.pdu_type == 0x07  # A-ABORT, then closed


def test_store_is_acknowledged_then_indexed_de_identified(
    make_node: Callable[..., object], tmp_path: Path
) -> None:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=5, jpeg=False)
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
    statuses = [assoc.send_c_store(dcmread(path)).Status for path in study.files.values()]
    assoc.release()
    assert statuses == [0x0000] * 5
    wait_until(lambda: _indexed(node) == 5, what="5 instances indexed")
    store = node.app.data_dir / "store"  # type: ignore[attr-defined]
    files = [p for p in store.rglob("*.dcm")]
    assert len(files) == 5
    for path in files:
        data = path.read_bytes()
        leaked = [t for t in study.tokens if t.encode() in data]
        assert not leaked, f"stored file holds planted PHI: {leaked}"


def test_the_same_instance_twice_is_stored_once(
    make_node: Callable[..., object], tmp_path: Path
) -> None:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=2, jpeg=False)
    ds = dcmread(next(iter(study.files.values())))
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
    assert assoc.send_c_store(ds).Status == 0x0000
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    # drained means nothing waiting and nothing claimed: every entry was indexed or released
    wait_until(lambda: node.app.spool.oldest() is None and _indexed(node) >= 1,  # type: ignore[attr-defined]
               what="spool drained")
    assert _indexed(node) == 1


def _file_with(tmp_path: Path, study: Corpus, *, cut: int = 0, other_meta_uid: bool = False
               ) -> Path:
    """A file as a misbehaving sender has it: cut short, or whose File Meta names another
    instance than its dataset (the SCU takes the request's Affected SOP Instance UID from
    the File Meta)."""
    ds = dcmread(next(iter(study.files.values())))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if other_meta_uid:
        uid = str(ds.SOPInstanceUID).encode()
        changed = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
        data = data.replace(uid, changed, 1)  # the first one is in the File Meta
    path = tmp_path / "crafted.dcm"
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's bytes as they are (not re-encoded by pydicom)."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.mark.usefixtures("send_raw")
def test_dataset_uid_differing_from_the_request_gets_a900(
    make_node: Callable[..., object], tmp_path: Path
) -> None:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)

    path = _file_with(tmp_path, study, other_meta_uid=True)
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0xA900
    assert status.ErrorComment == "SOP Instance UID differs from the request"
    assert node.app.spool.depth() == 0 and _indexed(node) == 0  # type: ignore[attr-defined]


@pytest.mark.usefixtures("send_raw")
def test_truncated_dataset_gets_c000_and_nothing_is_kept(
    make_node: Callable[..., object], tmp_path: Path
) -> None:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
    path = _file_with(tmp_path, study, cut=1000)
    with watched(node):  # RSS, threads and descriptors back to their baseline (I4)
        assoc = _scu().associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
        status = assoc.send_c_store(path)
        assoc.release()
    assert status.Status == 0xC000
    assert status.ErrorComment == "dataset is truncated"
    spool = node.app.data_dir / "spool"  # type: ignore[attr-defined]
    assert not [p for p in spool.rglob("*") if p.is_file()]
    assert _indexed(node) == 0


def test_unknown_caller_is_rejected_where_store_is_closed(
    make_node: Callable[..., object]
) -> None:
    node = make_node(**{"policy.loopback_store_open": False})
    assoc = _scu("STRANGER").associate("127.0.0.1", node.port, ae_title="GATEWAY")  # type: ignore[attr-defined]
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 3)


def test_wrong_called_ae_title_is_rejected(make_node: Callable[..., object]) -> None:
    node = make_node()
    assoc = _scu().associate("127.0.0.1", node.port, ae_title="NOTUS")  # type: ignore[attr-defined]
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 7)
