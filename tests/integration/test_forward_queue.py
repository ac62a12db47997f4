"""The forward queue (storage.jobs): what is queued, leases, back-off, dead letters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import storage.jobs as jobs
from gateway.app import App, build_app
from gateway.ingest import run_once
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import Instance, Study
from storage.queue_models import ItemState, JobKind, JobState
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = jobs.RetryPolicy(max_attempts=3, first_delay_seconds=30, multiplier=2,
                          max_delay_seconds=100)
META = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                 received_at=NOW, peer_address="127.0.0.1")


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    built = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    yield built
    built.close()


def _ingest(app: App, folder: Path, series: int = 1, per_series: int = 3) -> str:
    study = make_clinic_study(folder, series=series, per_series=per_series, jpeg=False)
    for path in study.files.values():
        app.spool.accept(_copy(path, folder / "spooled"), META)
    assert run_once(app).stored == series * per_series
    with session_scope(app.engine, readonly=True) as session:
        return str(session.scalars(select(Study.study_instance_uid)).one())


def _copy(path: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    target.write_bytes(path.read_bytes())
    return target


def test_enqueue_takes_every_instance_once_then_nothing(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        job = jobs.enqueue(session, study, "institute", NOW)
        assert job is not None and (job.kind, job.state, job.pending) == (
            JobKind.INITIAL, JobState.PENDING, 3)
        assert jobs.enqueue(session, study, "institute", NOW) is None  # already queued
        other = jobs.enqueue(session, study, "second-opinion", NOW)
        assert other is not None and other.id != job.id and other.pending == 3


def _deliver_all(app: App, job_id: int, owner: str = "a") -> jobs.JobRecord | None:
    with session_scope(app.engine) as session:
        items = jobs.items_to_send(session, job_id)
        jobs.record_items(session, job_id, [(i.sop_instance_uid, ItemState.SENT, 0)
                                            for i in items])
        return jobs.finish(session, job_id, owner, NOW, POLICY, confirmed_by="c-store-status")


def test_late_instances_go_as_a_follow_up_with_only_themselves(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in", per_series=2)
    with session_scope(app.engine) as session:
        first = jobs.enqueue(session, study, "institute", NOW)
        assert first is not None
        [claimed] = jobs.claim_due(session, "a", NOW, 60)
    done = _deliver_all(app, claimed.id)
    assert done is not None and done.state is JobState.DONE and done.sent == 2
    with session_scope(app.engine) as session:
        assert jobs.enqueue(session, study, "institute", NOW) is None  # nothing new
        # a late instance of the same study, indexed after the delivery
        late = session.scalars(select(Instance)).first()
        assert late is not None
        session.add(Instance(series_fk=late.series_fk, sop_instance_uid="2.25.999",
                             sop_class_uid=late.sop_class_uid, instance_number=99,
                             transfer_syntax_uid=late.transfer_syntax_uid,
                             file_path=late.file_path, file_size=late.file_size,
                             sha256=late.sha256, received_sha256="late",
                             received_at=NOW, calling_ae_title="CLINIC", source_peer=None))
        session.flush()
        follow_up = jobs.enqueue(session, study, "institute", NOW)
        assert follow_up is not None and follow_up.kind is JobKind.FOLLOW_UP
        assert [i.sop_instance_uid for i in jobs.items_to_send(session, follow_up.id)] == [
            "2.25.999"]


def test_a_lease_keeps_a_job_to_its_holder_until_it_expires(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        jobs.enqueue(session, study, "institute", NOW)
        assert len(jobs.claim_due(session, "a", NOW, 60)) == 1
        assert jobs.claim_due(session, "b", NOW + timedelta(seconds=59), 60) == []
        [taken] = jobs.claim_due(session, "b", NOW + timedelta(seconds=61), 60)
        assert taken.attempts == 2
    with session_scope(app.engine) as session:  # the first holder lost its lease
        assert jobs.finish(session, taken.id, "a", NOW, POLICY) is None
        assert jobs.get(session, taken.id).state is JobState.SENDING  # type: ignore[union-attr]


def test_failed_attempts_back_off_then_the_job_is_a_dead_letter(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        job = jobs.enqueue(session, study, "institute", NOW)
    assert job is not None
    moment, waits = NOW, []
    for _ in range(POLICY.max_attempts):
        with session_scope(app.engine) as session:
            assert jobs.claim_due(session, "a", moment - timedelta(seconds=1), 60) == []
            [claimed] = jobs.claim_due(session, "a", moment, 60)
            closed = jobs.finish(session, claimed.id, "a", moment, POLICY,
                                 error="association with institute failed")
        assert closed is not None
        if closed.state is JobState.PENDING:
            waits.append((closed.next_attempt_at - moment).total_seconds())
            moment = closed.next_attempt_at
    assert waits == [30, 60]
    assert closed.state is JobState.FAILED and "association" in closed.last_error
    with session_scope(app.engine) as session:
        again = jobs.retry(session, job.id, moment)
        assert (again.state, again.attempts, again.pending) == (JobState.PENDING, 0, 3)
        with pytest.raises(StorageError, match="expected a failed or cancelled job"):
            jobs.retry(session, job.id, moment)
        assert jobs.cancel(session, job.id, moment).state is JobState.CANCELLED


def test_a_refused_instance_fails_the_job_and_only_it_is_sent_again(
    app: App, tmp_path: Path
) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        jobs.enqueue(session, study, "institute", NOW)
        [claimed] = jobs.claim_due(session, "a", NOW, 60)
        first, *rest = jobs.items_to_send(session, claimed.id)
        jobs.record_items(session, claimed.id,
                          [(first.sop_instance_uid, ItemState.FAILED, 0xA900)]
                          + [(i.sop_instance_uid, ItemState.SENT, 0) for i in rest])
        closed = jobs.finish(session, claimed.id, "a", NOW, POLICY)
        assert closed is not None and (closed.state, closed.failed, closed.sent) == (
            JobState.FAILED, 1, 2)
        jobs.retry(session, claimed.id, NOW)
        assert [i.sop_instance_uid for i in jobs.items_to_send(session, claimed.id)] == [
            first.sop_instance_uid]


def test_two_forwarders_never_lease_the_same_job(app: App, tmp_path: Path) -> None:
    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        for index in range(6):
            jobs.enqueue(session, study, f"institute-{index}", NOW)
    taken: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def work(owner: str) -> None:
        barrier.wait()
        while True:
            with session_scope(app.engine) as session:
                claimed = jobs.claim_due(session, owner, NOW, 60)
            if not claimed:
                return
            taken[owner] += [job.id for job in claimed]

    threads = [threading.Thread(target=work, args=(owner,)) for owner in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = taken["a"] + taken["b"]
    assert len(every) == 6 and len(set(every)) == 6


# pynetdicom 3.0 drops the socket of a refused connection without closing it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_closed_window_holds_the_job_until_it_opens(app: App, tmp_path: Path) -> None:
    from gateway.forwarder import run_due
    from storage import peers
    from storage.records import PeerRecord
    from tests.interop.conftest import free_port

    study = _ingest(app, tmp_path / "in")
    with session_scope(app.engine) as session:
        peers.add(session, PeerRecord(
            slug="institute", ae_title="INSTITUTE", host="127.0.0.1", port=free_port(),
            roles=("destination",), schedule="* 22-23,0-5 * * mon-fri Europe/Berlin"))
        job = jobs.enqueue(session, study, "institute", NOW)
    assert job is not None
    closed = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # Friday noon in Berlin
    assert run_due(app, now=closed).total == 0
    with session_scope(app.engine, readonly=True) as session:
        held = jobs.get(session, job.id)
    assert held is not None and (held.state, held.attempts) == (JobState.PENDING, 0)
    opened = datetime(2026, 11, 27, 21, 30, tzinfo=UTC)  # Friday 22:30 in Berlin
    report = run_due(app, now=opened, limit=1)
    assert report.total == 1  # taken in its window; the institute is not listening
    with session_scope(app.engine, readonly=True) as session:
        tried = jobs.get(session, job.id)
    assert tried is not None and tried.attempts == 1 and "association" in tried.last_error
