"""The stability sweep (gateway.router): stable studies meet the routes and become jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import storage.jobs as jobs
import storage.peers as peers
import storage.routes as routes
from gateway.app import App, build_app
from gateway.ingest import run_once
from gateway.router import report_spool, route_stable
from storage.db import session_scope
from storage.index import set_study_state
from storage.models import Study, StudyState
from storage.queue_models import JobKind
from storage.records import PeerRecord
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study

RECEIVED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STABLE = 60


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    settings = node_settings(tmp_path, db_url,
                             **{"forward.stable_after_seconds": STABLE})
    built = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    with session_scope(built.engine) as session:
        for slug in ("institute", "registry"):
            peers.add(session, PeerRecord(slug=slug, ae_title=slug.upper(), host="127.0.0.1",
                                          port=104, roles=("destination",)))
        routes.add(session, routes.RouteSpec(
            name="ct-from-clinic-a", destinations=("institute",),
            conditions=("SendingPeer=clinic-a", "ModalitiesInStudy=CT")))
        routes.add(session, routes.RouteSpec(
            name="never", destinations=("registry",), conditions=("StudyDescription=!*",)))
    yield built
    built.close()


def _ingest(app: App, folder: Path, peer: str, seed: int, series: set[int] | None = None,
            received: datetime = RECEIVED) -> str:
    study = make_clinic_study(folder, series=2, per_series=3, seed=seed, jpeg=False)
    meta = SpoolMeta(calling_ae_title=peer.upper(), called_ae_title="GATEWAY",
                     source_peer=peer, received_at=received, peer_address="127.0.0.1")
    for key, path in study.files.items():
        if series is None or int(key.split("_")[0][1:]) in series:
            app.spool.accept_bytes(lambda handle, p=path: handle.write(p.read_bytes()), meta)
    run_once(app)
    with session_scope(app.engine, readonly=True) as session:
        return str(session.scalars(select(Study.study_instance_uid)
                                   .where(Study.source_peer == peer)).one())


def _jobs(app: App, uid: str) -> list[jobs.JobRecord]:
    with session_scope(app.engine, readonly=True) as session:
        return jobs.list_jobs(session, study_instance_uid=uid)


def test_a_stable_study_goes_where_its_routes_say_and_only_once(
    app: App, tmp_path: Path
) -> None:
    a = _ingest(app, tmp_path / "a", "clinic-a", seed=0)
    b = _ingest(app, tmp_path / "b", "clinic-b", seed=1)
    # not yet stable: nothing is routed
    assert route_stable(app, RECEIVED + timedelta(seconds=STABLE - 1)) == 0
    assert _jobs(app, a) == [] and _jobs(app, b) == []
    assert route_stable(app, RECEIVED + timedelta(seconds=STABLE)) == 2
    [job] = _jobs(app, a)
    assert (job.destination, job.route, job.kind, job.pending) == (
        "institute", "ct-from-clinic-a", JobKind.INITIAL, 6)
    assert _jobs(app, b) == [], "clinic B's study matched a route meant for clinic A only"
    # routed once: a second sweep queues nothing
    assert route_stable(app, RECEIVED + timedelta(hours=1)) == 0
    assert len(_jobs(app, a)) == 1


def test_instances_indexed_after_routing_follow_alone(app: App, tmp_path: Path) -> None:
    a = _ingest(app, tmp_path / "a", "clinic-a", seed=0, series={1})
    assert route_stable(app, RECEIVED + timedelta(seconds=STABLE)) == 1
    [first] = _jobs(app, a)
    with session_scope(app.engine) as session:  # the first job was delivered
        [claimed] = jobs.claim_due(session, "t", RECEIVED + timedelta(minutes=2), 60)
        items = jobs.items_to_send(session, claimed.id)
        jobs.record_items(session, claimed.id,
                          [(i.sop_instance_uid, jobs.ItemState.SENT, 0) for i in items])
        jobs.finish(session, claimed.id, "t", RECEIVED, jobs.RetryPolicy(3, 1, 2, 10))
    late = RECEIVED + timedelta(minutes=5)
    _ingest(app, tmp_path / "late", "clinic-a", seed=0, series={2}, received=late)
    assert route_stable(app, late + timedelta(seconds=STABLE - 1)) == 0  # not yet quiet
    assert route_stable(app, late + timedelta(seconds=STABLE)) == 1
    newest, oldest = _jobs(app, a)
    assert oldest.id == first.id and oldest.sent == 3
    assert (newest.kind, newest.pending) == (JobKind.FOLLOW_UP, 3)


def test_a_quarantined_study_is_held_until_released(app: App, tmp_path: Path) -> None:
    a = _ingest(app, tmp_path / "a", "clinic-a", seed=0)
    with session_scope(app.engine) as session:
        set_study_state(session, a, StudyState.QUARANTINED)
    assert route_stable(app, RECEIVED + timedelta(hours=1)) == 0
    assert _jobs(app, a) == []
    with session_scope(app.engine) as session:
        set_study_state(session, a, StudyState.ACTIVE)
    assert route_stable(app, RECEIVED + timedelta(hours=1)) == 1
    assert [job.destination for job in _jobs(app, a)] == ["institute"]


def test_a_study_waits_while_ingest_is_behind_its_last_instance(
    app: App, tmp_path: Path
) -> None:
    # the study's instances indexed so far arrived just before one still in the spool
    a = _ingest(app, tmp_path / "a", "clinic-a", seed=0,
                received=datetime.now(UTC) - timedelta(seconds=5))
    study = make_clinic_study(tmp_path / "waiting", series=1, per_series=1, seed=2, jpeg=False)
    meta = SpoolMeta(calling_ae_title="CLINIC-A", called_ae_title="GATEWAY",
                     source_peer="clinic-a", received_at=RECEIVED, peer_address="127.0.0.1")
    [path] = study.files.values()
    app.spool.accept_bytes(lambda handle: handle.write(path.read_bytes()), meta)
    accepted = app.spool.oldest()
    assert accepted is not None
    when = accepted + timedelta(seconds=2 * STABLE)  # by the clock, study a is stable
    # but the waiting entry may belong to it, arrived within stable_after of the others
    assert route_stable(app, when) == 0
    assert _jobs(app, a) == []
    run_once(app)
    assert app.spool.oldest() is None
    assert route_stable(app, when) == 2
    assert [job.destination for job in _jobs(app, a)] == ["institute"]


def test_a_backlog_in_another_nodes_spool_holds_the_sweep_while_that_node_reports(
    app: App, tmp_path: Path, db_url: str
) -> None:
    a = _ingest(app, tmp_path / "a", "clinic-a", seed=0,
                received=datetime.now(UTC) - timedelta(seconds=5))
    # a second node on the same database, with its own spool
    other = build_app(node_settings(tmp_path / "other", db_url,
                                    **{"forward.stable_after_seconds": STABLE}),
                      {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        study = make_clinic_study(tmp_path / "waiting", series=1, per_series=1, seed=2,
                                  jpeg=False)
        meta = SpoolMeta(calling_ae_title="CLINIC-A", called_ae_title="GATEWAY",
                         source_peer="clinic-a", received_at=RECEIVED, peer_address="127.0.0.1")
        [path] = study.files.values()
        other.spool.accept_bytes(lambda handle: handle.write(path.read_bytes()), meta)
        accepted = other.spool.oldest()
        assert accepted is not None and app.spool.oldest() is None
        when = max(accepted, RECEIVED) + timedelta(seconds=STABLE)
        report_spool(other, when - timedelta(seconds=1))
        assert route_stable(app, when) == 0  # the entry may belong to study a
        assert _jobs(app, a) == []
        # a node that stopped reporting (three polls and more) no longer holds the others
        later = when + timedelta(seconds=3 * app.settings.forward.poll_seconds + 11)
        assert route_stable(app, later) == 1
        assert [job.destination for job in _jobs(app, a)] == ["institute"]
        # once it ingested and reported an empty spool, its study is routed too
        run_once(other)
        report_spool(other, later)
        assert route_stable(app, later) == 1
    finally:
        other.close()


def test_the_clock_lets_a_firing_in_progress_end_before_it_stops(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import gateway.clock as clock

    started, ended = threading.Event(), threading.Event()

    def slow_report(node: App) -> None:  # holds a database session for a while, as a report
        started.set()
        with session_scope(node.engine, readonly=True) as session:
            session.scalars(select(Study.study_instance_uid)).all()
            time.sleep(0.5)
        ended.set()

    monkeypatch.setattr(clock, "report_spool", slow_report)
    ticking = clock.Clock(app)
    ticking.start()
    assert started.wait(5), "the clock did not fire at start"
    ticking.stop()
    # the session went back before stop() returned, so closing the engine now closes it
    assert ended.is_set()
