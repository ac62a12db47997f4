"""The study index on SQLite and PostgreSQL: idempotent adds, counts, conflicts, concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from storage import index
from storage.crypto import MapCipher
from storage.db import session_scope
from storage.errors import StorageError
from storage.index import AddOutcome
from storage.models import Instance, MapKind, Patient, PseudonymMap, Series, Study, StudyState
from storage.records import InstanceRecord, MapEntry
from tests.fixtures_db import MR_IMAGE_STORAGE, instance_record

CIPHER = MapCipher(b"k" * 32)
T0 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


def _add(engine: Engine, record: InstanceRecord, entries: list[MapEntry] | None = None,
         ) -> AddOutcome:
    with session_scope(engine) as session:
        return index.add_instance(session, record, entries or [], CIPHER)


def _count(engine: Engine, model: type[object]) -> int:
    with session_scope(engine, readonly=True) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_added_then_already_present_then_conflict(engine: Engine) -> None:
    record = instance_record()
    assert _add(engine, record) is AddOutcome.ADDED
    assert _add(engine, record) is AddOutcome.ALREADY_PRESENT
    changed = instance_record(
        sop_instance_uid=record.sop_instance_uid, received_sha256="2" * 64,
        study_instance_uid=record.study_instance_uid,
        series_instance_uid=record.series_instance_uid)
    assert _add(engine, changed) is AddOutcome.CONFLICT
    with session_scope(engine, readonly=True) as session:
        assert index.instance_exists(session, record.sop_instance_uid) == (True, "1" * 64)
        assert index.instance_exists(session, "2.25.1") == (False, None)
        study = index.get_study(session, record.study_instance_uid)
    assert study is not None
    assert study.number_of_study_related_instances == 1
    assert study.number_of_study_related_series == 1
    assert _count(engine, Instance) == 1


def test_counts_and_multi_valued_attributes_after_several_series(engine: Engine) -> None:
    study_uid = "2.25.1000"
    ct_a, ct_b, mr = "2.25.2001", "2.25.2002", "2.25.2003"
    plan = [(ct_a, "CT", 1, 3), (ct_b, "CT", 2, 2), (mr, "MR", 3, 1)]
    at = T0
    for series_uid, modality, number, instances in plan:
        for n in range(instances):
            at += timedelta(minutes=1)
            record = instance_record(
                study_instance_uid=study_uid, series_instance_uid=series_uid,
                modality=modality, series_number=number, instance_number=n + 1,
                sop_class_uid=MR_IMAGE_STORAGE if modality == "MR" else
                "1.2.840.10008.5.1.4.1.1.2", received_at=at,
                file_path=f"{series_uid[-2:]}/{n:02d}/file.dcm")
            assert _add(engine, record) is AddOutcome.ADDED
    early = instance_record(study_instance_uid=study_uid, series_instance_uid=mr,
                            modality="MR", sop_class_uid=MR_IMAGE_STORAGE,
                            received_at=T0 - timedelta(hours=1))
    assert _add(engine, early) is AddOutcome.ADDED
    with session_scope(engine, readonly=True) as session:
        study = index.get_study(session, study_uid)
        files = index.study_files(session, study_uid)
    assert study is not None
    assert study.number_of_study_related_series == 3
    assert study.number_of_study_related_instances == 7
    assert study.modalities_in_study == ("CT", "MR")
    assert study.sop_classes_in_study == ("1.2.840.10008.5.1.4.1.1.2", MR_IMAGE_STORAGE)
    assert [(s.series_instance_uid, s.number_of_series_related_instances)
            for s in study.series] == [(ct_a, 3), (ct_b, 2), (mr, 2)]
    assert study.first_received_at == T0 + timedelta(minutes=1)
    assert study.last_received_at == at
    assert study.last_received_at.tzinfo is not None
    assert study.state is StudyState.ACTIVE
    assert files[:3] == ["01/00/file.dcm", "01/01/file.dcm", "01/02/file.dcm"]
    assert len(files) == 7
    assert _count(engine, Patient) == 1


def test_a_study_under_another_patient_is_a_conflict_and_writes_nothing(engine: Engine) -> None:
    first = instance_record(patient_id="PSEUDO-A")
    assert _add(engine, first) is AddOutcome.ADDED
    intruder = instance_record(patient_id="PSEUDO-B",
                               study_instance_uid=first.study_instance_uid)
    entry = MapEntry(MapKind.PATIENT, "PSEUDO-B", "REAL-B", first.study_instance_uid)
    assert _add(engine, intruder, [entry]) is AddOutcome.CONFLICT
    assert _count(engine, Patient) == 1
    assert _count(engine, Instance) == 1
    assert _count(engine, PseudonymMap) == 0


def test_a_series_under_another_study_is_a_conflict(engine: Engine) -> None:
    first = instance_record()
    assert _add(engine, first) is AddOutcome.ADDED
    moved = instance_record(series_instance_uid=first.series_instance_uid)
    assert _add(engine, moved) is AddOutcome.CONFLICT
    assert _count(engine, Study) == 1
    assert _count(engine, Series) == 1


def test_map_entries_are_written_once(engine: Engine) -> None:
    record = instance_record()
    entries = [
        MapEntry(MapKind.PATIENT, record.patient_id, "REAL-ID", record.study_instance_uid),
        MapEntry(MapKind.UID, record.sop_instance_uid, "1.2.3.4", record.study_instance_uid),
        MapEntry(MapKind.UID, record.sop_instance_uid, "1.2.3.4", record.study_instance_uid),
    ]
    assert _add(engine, record, entries) is AddOutcome.ADDED
    other = instance_record(study_instance_uid=record.study_instance_uid,
                            series_instance_uid=record.series_instance_uid)
    again = [MapEntry(MapKind.PATIENT, record.patient_id, "CHANGED", None)]
    assert _add(engine, other, again) is AddOutcome.ADDED
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(select(PseudonymMap.kind, PseudonymMap.study_instance_uid)
                               .order_by(PseudonymMap.kind)).all()
    assert [(kind, uid) for kind, uid in rows] == [
        (MapKind.PATIENT, record.study_instance_uid), (MapKind.UID, record.study_instance_uid)]


def test_bad_map_kind_is_refused(engine: Engine) -> None:
    bad = MapEntry("issuer", "P", "x", None)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="map entry kind: expected one of"):
        _add(engine, instance_record(), [bad])
    assert _count(engine, Instance) == 0


def test_invalid_records_are_refused(engine: Engine) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"received_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"sop_instance_uid": "2.25." + "1" * 70}, "sop_instance_uid: expected 1-64"),
        ({"series_instance_uid": ""}, "series_instance_uid: expected 1-64"),
        ({"patient_id": ""}, "patient_id: expected a pseudonym"),
        ({"file_size": -1}, "file_size"),
    ]
    for change, message in cases:
        with pytest.raises(StorageError, match=message):
            _add(engine, instance_record(**change))
    assert _count(engine, Instance) == 0


def test_list_studies_newest_first_and_by_state(engine: Engine) -> None:
    uids = []
    for hours in range(3):
        record = instance_record(received_at=T0 + timedelta(hours=hours),
                                 patient_id=f"PSEUDO-{hours}")
        _add(engine, record)
        uids.append(record.study_instance_uid)
    with session_scope(engine) as session:
        assert index.set_study_state(session, uids[1], StudyState.QUARANTINED) is True
        assert index.set_study_state(session, "2.25.404", StudyState.QUARANTINED) is False
    with session_scope(engine, readonly=True) as session:
        every = index.list_studies(session)
        held = index.list_studies(session, quarantined=True)
        active = index.list_studies(session, quarantined=False)
        first = index.list_studies(session, limit=1)
    assert [s.study_instance_uid for s in every] == uids[::-1]
    assert [s.study_instance_uid for s in held] == [uids[1]]
    assert [s.study_instance_uid for s in active] == [uids[2], uids[0]]
    assert [s.study_instance_uid for s in first] == [uids[2]]
    summary = every[0]
    assert summary.patient_id == "PSEUDO-2" and summary.modalities_in_study == ("CT",)
    assert summary.number_of_study_related_instances == 1
    assert summary.source_peer == "clinic-a" and summary.calling_ae_title == "MODALITY1"


def test_delete_study_returns_its_files_and_keeps_the_rest(engine: Engine) -> None:
    doomed = instance_record(file_path="aa/aa/doomed.dcm")
    sibling = instance_record(study_instance_uid=doomed.study_instance_uid,
                              file_path="aa/bb/sibling.dcm")
    other = instance_record(file_path="bb/bb/other.dcm")
    for record in (doomed, sibling, other):
        assert _add(engine, record) is AddOutcome.ADDED
    with session_scope(engine) as session:
        paths = index.delete_study(session, doomed.study_instance_uid)
        assert index.delete_study(session, "2.25.404") == []
    assert sorted(paths) == ["aa/aa/doomed.dcm", "aa/bb/sibling.dcm"]
    with session_scope(engine, readonly=True) as session:
        assert index.get_study(session, doomed.study_instance_uid) is None
        assert index.get_study(session, other.study_instance_uid) is not None
    assert _count(engine, Instance) == 1
    assert _count(engine, Series) == 1
    assert _count(engine, Patient) == 1
    assert _add(engine, doomed) is AddOutcome.ADDED  # the spool may re-run it


def test_quarantine_records(engine: Engine) -> None:
    name = "00000000000000000001-" + "a" * 32
    with session_scope(engine) as session:
        index.record_quarantine(session, name, "burned-in annotation", "MODALITY1", "2.25.9")
        index.record_quarantine(session, name, "burned-in annotation", "MODALITY1", "2.25.9")
    from storage import quarantine
    with session_scope(engine) as session:
        held = quarantine.list_entries(session)
        assert [(q.spool_name, q.reason, q.sop_instance_uid) for q in held] == [
            (name, "burned-in annotation", "2.25.9")]
        assert quarantine.mark_released(session, name) is True
        assert quarantine.mark_released(session, name) is False
    with session_scope(engine, readonly=True) as session:
        assert quarantine.list_entries(session) == []
        released = quarantine.list_entries(session, released=True)
    assert released[0].released_at is not None


def _race(engine: Engine, workers: int, job: Callable[[int], list[AddOutcome]],
          ) -> list[AddOutcome]:
    barrier = threading.Barrier(workers)
    results: list[AddOutcome] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        try:
            barrier.wait()
            outcomes = job(worker)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
            return
        with lock:
            results.extend(outcomes)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    return results


def test_four_workers_adding_one_new_study_at_once(engine: Engine) -> None:
    study_uid, per_worker = "2.25.7000", 12
    series = {0: ("2.25.7001", "CT"), 1: ("2.25.7002", "MR"), 2: ("2.25.7003", "CT")}

    def job(worker: int) -> list[AddOutcome]:
        outcomes = []
        for n in range(per_worker):
            series_uid, modality = series[(worker + n) % 3]
            record = instance_record(
                study_instance_uid=study_uid, series_instance_uid=series_uid,
                modality=modality, sop_instance_uid=f"2.25.7{worker}{n:03d}",
                received_at=T0 + timedelta(seconds=worker * 100 + n))
            entries = [MapEntry(MapKind.STUDY, study_uid, "1.2.3", study_uid),
                       MapEntry(MapKind.PATIENT, record.patient_id, "REAL", study_uid)]
            outcomes.append(_add(engine, record, entries))
        return outcomes

    outcomes = _race(engine, 4, job)
    assert outcomes == [AddOutcome.ADDED] * (4 * per_worker)
    with session_scope(engine, readonly=True) as session:
        study = index.get_study(session, study_uid)
    assert study is not None
    assert study.number_of_study_related_instances == 4 * per_worker
    assert study.number_of_study_related_series == 3
    assert study.modalities_in_study == ("CT", "MR")
    assert sum(s.number_of_series_related_instances for s in study.series) == 4 * per_worker
    assert study.last_received_at == T0 + timedelta(seconds=3 * 100 + per_worker - 1)
    assert _count(engine, Study) == 1
    assert _count(engine, Patient) == 1
    assert _count(engine, PseudonymMap) == 2


@pytest.mark.parametrize("same_bytes, expected", [
    (True, AddOutcome.ALREADY_PRESENT), (False, AddOutcome.CONFLICT)])
def test_four_workers_adding_the_same_instance_at_once(
        engine: Engine, same_bytes: bool, expected: AddOutcome) -> None:
    base = instance_record()

    def job(worker: int) -> list[AddOutcome]:
        digest = base.received_sha256 if same_bytes else f"{worker}" * 64
        record = instance_record(
            study_instance_uid=base.study_instance_uid,
            series_instance_uid=base.series_instance_uid,
            sop_instance_uid=base.sop_instance_uid, received_sha256=digest)
        return [_add(engine, record)]

    outcomes = Counter(_race(engine, 4, job))
    assert outcomes == Counter({AddOutcome.ADDED: 1, expected: 3})
    with session_scope(engine, readonly=True) as session:
        study = index.get_study(session, base.study_instance_uid)
    assert study is not None and study.number_of_study_related_instances == 1
    assert _count(engine, Instance) == 1
