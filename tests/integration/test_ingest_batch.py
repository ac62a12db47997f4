"""The ingest worker's group commit (gateway.ingest): batches, their failures, their repeats."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import gateway.ingest as ingest
import storage.index as storage_index
from gateway.app import App, build_app
from storage.db import session_scope
from storage.models import Instance, MapKind, PseudonymMap
from storage.pseudomap import originals_for_study, uid_originals
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study

META = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                 received_at=datetime.now(UTC), peer_address="127.0.0.1")


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    built = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    yield built
    built.close()


def _copy_of(path: Path) -> Callable[[BinaryIO], None]:
    def write(handle: BinaryIO) -> None:
        handle.write(path.read_bytes())
    return write


def _spool(app: App, tmp_path: Path, count: int) -> list[Path]:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=count, jpeg=False)
    files = list(study.files.values())
    for path in files:
        app.spool.accept_bytes(_copy_of(path), META)
    return files


def _indexed(app: App) -> list[tuple[str, str]]:
    with session_scope(app.engine, readonly=True) as session:
        return [(row.sop_instance_uid, row.file_path)
                for row in session.execute(select(Instance.sop_instance_uid, Instance.file_path))]


def test_a_batch_commits_its_instances_in_one_transaction(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spool(app, tmp_path, 40)
    writes: list[bool] = []
    original = session_scope

    def counting(engine: Any, *, readonly: bool = False) -> AbstractContextManager[Any]:
        if not readonly:
            writes.append(True)
        return original(engine, readonly=readonly)

    monkeypatch.setattr("gateway.ingest.session_scope", counting)
    monkeypatch.setattr(ingest, "BATCH_SECONDS", 600.0)  # batches split by size only
    report = ingest.run_once(app)
    assert report.stored == 40 and report.total == 40
    assert len(_indexed(app)) == 40
    # 40 instances, at most BATCH per transaction: two write transactions, not forty
    assert len(writes) == -(-40 // ingest.BATCH)
    assert app.spool.depth() == 0


def test_a_batch_of_one_study_maps_every_original_once(app: App, tmp_path: Path) -> None:
    """The entries the instances of a batch share (patient, study, series) are written
    once, by the first instance; every instance's own UIDs are still mapped."""
    files = _spool(app, tmp_path, 6)
    originals = [dcmread(path, stop_before_pixels=True) for path in files]
    app.spool.accept_bytes(_copy_of(files[0]), META)  # a repeat in the same batch
    report = ingest.run_once(app)
    assert (report.stored, report.already_present) == (6, 1)
    with session_scope(app.engine, readonly=True) as session:
        study = session.execute(select(Instance.sop_instance_uid)).scalars().all()
        (new_study,) = set(session.execute(
            select(PseudonymMap.study_instance_uid)
            .where(PseudonymMap.kind == MapKind.STUDY)).scalars())
        mapped = uid_originals(session, app.cipher, new_study)
        identifiers = originals_for_study(session, app.cipher, new_study)
        patients = session.execute(
            select(PseudonymMap.pseudonym).where(PseudonymMap.kind == MapKind.PATIENT)
        ).scalars().all()
    assert len(study) == 6 and len(patients) == 1
    wanted = {ds.SOPInstanceUID for ds in originals} | {originals[0].SeriesInstanceUID,
                                                         originals[0].StudyInstanceUID}
    assert wanted <= set(mapped.values())
    assert json.loads(identifiers["patient"])["patient_id"] == originals[0].PatientID
    assert identifiers["study"] == originals[0].StudyInstanceUID


def test_the_same_instance_twice_in_a_batch_is_indexed_once_and_keeps_its_file(
    app: App, tmp_path: Path
) -> None:
    files = _spool(app, tmp_path, 2)
    app.spool.accept_bytes(_copy_of(files[0]), META)  # a repeat
    report = ingest.run_once(app)
    assert (report.stored, report.already_present, report.quarantined) == (2, 1, 0)
    indexed = _indexed(app)
    assert len(indexed) == 2
    for _, rel in indexed:  # the repeat never removed the file its first copy is indexed with
        assert dcmread(app.store.path_of(rel)).SOPInstanceUID
    assert app.spool.depth() == 0


def test_a_database_failure_puts_the_whole_batch_back_and_keeps_no_file(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spool(app, tmp_path, 3)
    original = storage_index.add_instance
    calls: list[int] = []

    def failing_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return original(*args, **kwargs)

    monkeypatch.setattr(storage_index, "add_instance", failing_second)
    failed = ingest.run_once(app)
    assert (failed.retry, failed.stored) == (3, 0)
    assert _indexed(app) == [], "a failed batch left index rows"
    assert not list(app.store.root.rglob("*.dcm")), "a failed batch left files in the store"
    assert app.spool.depth() == 3 and not list(app.spool.claimed.glob("*.dcm"))

    monkeypatch.setattr(storage_index, "add_instance", original)
    retried = ingest.run_once(app)
    assert retried.stored == 3
    assert len(_indexed(app)) == 3 and app.spool.depth() == 0


def test_a_store_sync_failure_puts_the_whole_batch_back(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spool(app, tmp_path, 2)

    def no_space(rels: list[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(app.store, "sync", no_space)
    failed = ingest.run_once(app)
    assert failed.retry == 2 and _indexed(app) == []
    assert not list(app.store.root.rglob("*.dcm")) and app.spool.depth() == 2
    monkeypatch.undo()
    assert ingest.run_once(app).stored == 2


def test_a_spool_left_by_a_crash_between_rename_and_commit_is_redone(
    app: App, tmp_path: Path
) -> None:
    """A file renamed into the store but never indexed is rewritten under its own name."""
    _spool(app, tmp_path, 1)
    entry = app.spool.claim()
    assert entry is not None
    with session_scope(app.engine, readonly=True) as reader:
        prepared = ingest._prepare(app, entry, (), reader)
    assert isinstance(prepared, ingest._Prepared)
    written = app.store.path_of(prepared.record.file_path)
    assert written.exists()
    # the crash: nothing committed, the claim returns at start-up
    assert app.spool.recover() == 1
    report = ingest.run_once(app)
    assert report.stored == 1
    (sop, rel), = _indexed(app)
    assert app.store.path_of(rel) == written, "the redo wrote a second file beside the first"
    assert len(list(app.store.root.rglob("*.dcm"))) == 1
    shutil.rmtree(tmp_path / "study")
