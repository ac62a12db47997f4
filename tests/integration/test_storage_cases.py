"""storage.cases: a case opened by enqueue, moved by finish, matched only within its institute."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import storage.cases as cases
import storage.jobs as jobs
import storage.peers as peers
from gateway.app import App, build_app
from gateway.ingest import run_once
from storage.case_models import CaseState
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import Instance, Series, Study
from storage.queue_models import ItemState, JobKind, JobState
from storage.records import PeerRecord
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = jobs.RetryPolicy(max_attempts=3, first_delay_seconds=30, multiplier=2,
                          max_delay_seconds=100)


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    built = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    with session_scope(built.engine) as session:
        for slug, roles, space in (("clinic", ("source", "destination"), "shared"),
                                   ("institute-a", ("destination", "results"), "shared"),
                                   ("institute-b", ("destination", "results"), "own")):
            peers.add(session, PeerRecord(slug=slug, ae_title=slug[:16].upper(),
                                          host="127.0.0.1", port=104, roles=roles,
                                          pseudonyms=space))
    yield built
    built.close()


def _ingest(app: App, folder: Path, per_series: int = 2) -> str:
    study = make_clinic_study(folder, series=1, per_series=per_series, jpeg=False)
    meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer="clinic",
                     received_at=NOW, peer_address="127.0.0.1")
    for path in study.files.values():
        copy = folder / "spooled" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
        app.spool.accept(copy, meta)
    assert run_once(app).stored == per_series
    with session_scope(app.engine, readonly=True) as session:
        return str(session.scalars(select(Study.study_instance_uid)).one())


def _send(app: App, job_id: int) -> None:
    """Every item of the job answered 0x0000, its delivery not yet confirmed."""
    with session_scope(app.engine) as session:
        [claimed] = jobs.claim_due(session, "test", NOW + timedelta(hours=1), 60)
        assert claimed.id == job_id
        sops = [item.sop_instance_uid for item in jobs.items_to_send(session, job_id)]
        jobs.record_items(session, job_id, [(sop, ItemState.SENT, 0) for sop in sops])


def _finish(app: App, job_id: int) -> jobs.JobRecord:
    """The job's delivery confirmed: done."""
    with session_scope(app.engine) as session:
        done = jobs.finish(session, job_id, "test", NOW, POLICY)
    assert done is not None and done.state is JobState.DONE
    return done


def _deliver(app: App, job_id: int) -> jobs.JobRecord:
    _send(app, job_id)
    return _finish(app, job_id)


def test_a_case_follows_its_study_there_and_its_results_back(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        job = jobs.enqueue(session, study, "institute-a", NOW)
        assert job is not None
        [case] = cases.list_cases(session)
        uids = cases.uid_map(session, case.id)
        series = session.scalar(select(Series.series_instance_uid))
        sops = set(session.scalars(select(Instance.sop_instance_uid)))
    assert (case.clinic, case.institute, case.pseudonyms, case.state, case.instances) == (
        "clinic", "institute-a", "shared", CaseState.SENT, 2)
    assert set(uids) == {study, series, *sops} and all(k == v for k, v in uids.items())
    _deliver(app, job.id)
    with session_scope(app.engine) as session:
        assert cases.get(session, case.id).state is CaseState.DELIVERED  # type: ignore[union-attr]
        assert cases.match(session, "institute-a", [study, "9.9.9"]) == {case.id: 1}
        assert cases.match(session, "institute-b", [study]) == {}  # never another institute's
        assert cases.add_result(session, case.id, sop_instance_uid="1.2.9.1",
                                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.59",
                                transfer_syntax_uid="1.2.840.10008.1.2.1",
                                institute_sop_instance_uid="2.25.77", file_path="ab/cd",
                                now=NOW)
        assert not cases.add_result(session, case.id, sop_instance_uid="1.2.9.1",
                                    sop_class_uid="x", transfer_syntax_uid="y",
                                    institute_sop_instance_uid="z", file_path="", now=NOW)
        back = jobs.enqueue_results(session, study, "clinic", ["1.2.9.1"], NOW)
        assert back is not None and (back.kind, back.pending) == (JobKind.RESULT, 1)
        assert jobs.enqueue_results(session, study, "clinic", ["1.2.9.1"], NOW) is None
        assert cases.get(session, case.id).state is CaseState.ANSWERED  # type: ignore[union-attr]
        assert cases.delivered_files(session) == []
        [item] = jobs.items_to_send(session, back.id)
        assert (item.file_path, item.reidentified) == ("ab/cd", True)
    _send(app, back.id)
    with session_scope(app.engine, readonly=True) as session:  # awaiting its commitment
        assert cases.delivered_files(session) == [], "purged before delivery was confirmed"
    _finish(app, back.id)
    with session_scope(app.engine) as session:
        assert cases.get(session, case.id).state is CaseState.RETURNED  # type: ignore[union-attr]
        assert cases.result_jobs(session, case.id) == [back.id]
        [(result_id, path)] = cases.delivered_files(session)
        assert path == "ab/cd"
        cases.forget_file(session, result_id)
        assert cases.delivered_files(session) == []
        assert cases.close(session, case.id, NOW).state is CaseState.CLOSED
        with pytest.raises(StorageError, match="already closed"):
            cases.close(session, case.id, NOW)
        assert cases.match(session, "institute-a", [study]) == {}  # closed: nothing matches


def test_an_own_space_case_waits_for_the_node_to_fill_in_the_institute_s_uids(
        app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        assert jobs.enqueue(session, study, "institute-b", NOW) is not None
        [case] = cases.list_cases(session, institute="institute-b")
        assert (case.pseudonyms, case.institute_study_uid, case.institute_patient_id) == (
            "own", None, None)
        assert cases.match(session, "institute-b", [study]) == {}  # not the node's UIDs
        todo = cases.uids_to_fill(session, "institute-b")
        assert len(todo) == 4 and cases.uids_to_fill(session, "institute-a") == []
        cases.fill_uids(session, [(row_id, f"2.25.{row_id}") for row_id, _slug, _uid in todo])
        assert cases.uids_to_fill(session) == []
        assert cases.match(session, "institute-b", [f"2.25.{todo[0][0]}"]) == {case.id: 1}


def test_a_follow_up_sends_a_delivered_case_again(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        job = jobs.enqueue(session, study, "institute-a", NOW)
        assert job is not None
    _deliver(app, job.id)
    with session_scope(app.engine) as session:
        [case] = cases.list_cases(session)
        assert case.state is CaseState.DELIVERED
        # a follow-up job for late instances: the case goes back to sent
        late = cases.track(session, study, "institute-a", ["2.25.999"], NOW)
        assert late.id == case.id and late.state is CaseState.SENT


def test_matching_many_referenced_uids_counts_every_hit_once(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in", per_series=3)
    with session_scope(app.engine) as session:
        assert jobs.enqueue(session, study, "institute-a", NOW) is not None
        [case] = cases.list_cases(session)
        known = list(cases.uid_map(session, case.id))
        # a large KOS: more references than one statement binds, the case's among them
        many = [f"2.25.{n}" for n in range(1200)] + known + known[:2]
        assert cases.match(session, "institute-a", many) == {case.id: len(known)}
