"""A destination's forwarding options: associations at once, retry policy, transfer syntax.

storage.jobs.claim_due keeps each destination within its ``max_associations``
under concurrent claimers; gateway.forwarder.run_due sends with each
destination's retry policy and transfer syntax, several jobs of one
destination at once when it allows, to a pynetdicom storage SCP that
records what arrived and when.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

import storage.jobs as jobs
from gateway.app import App, build_app
from gateway.forwarder import run_due
from gateway.ingest import run_once
from storage import peers
from storage.db import session_scope
from storage.models import Study
from storage.queue_models import JobState
from storage.records import PeerRecord
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study
from tests.interop.conftest import free_port

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
META = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                 received_at=NOW, peer_address="127.0.0.1")


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    settings = node_settings(tmp_path, db_url, **{"forward.max_workers": 4})
    built = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    yield built
    built.close()


def _ingest(app: App, folder: Path, studies: int, per_study: int = 1,
            rle: bool = False, broken: int = 0) -> list[str]:
    """Ingest ``studies`` studies (seeds 0..n-1); their new StudyInstanceUIDs.

    With ``rle`` each instance is RLE Lossless; the first ``broken`` of them carry a
    frame whose RLE header is cut short (PS3.5 G.3.1: 64 bytes), which no decoder takes."""
    for seed in range(studies):
        corpus = make_clinic_study(folder / f"study{seed}", series=1, per_series=per_study,
                                   seed=seed, jpeg=False)
        for n, path in enumerate(corpus.files.values()):
            if rle:
                ds = dcmread(path)
                ds.compress(RLELossless)
                if n < broken:
                    ds.PixelData = encapsulate([b"\x01\x00\x00\x00"])
                ds.save_as(path, enforce_file_format=True)
            app.spool.accept(path, META)
    assert run_once(app).stored == studies * per_study
    with session_scope(app.engine, readonly=True) as session:
        return [str(uid) for uid in session.scalars(select(Study.study_instance_uid))]


def _destination(app: App, slug: str, port: int, **options: object) -> None:
    with session_scope(app.engine) as session:
        peers.add(session, PeerRecord(slug=slug, ae_title="SINK", host="127.0.0.1", port=port,
                                      roles=("destination",), **options))  # type: ignore[arg-type]


def _enqueue(app: App, studies: list[str], *destinations: str) -> list[int]:
    with session_scope(app.engine) as session:
        queued = [jobs.enqueue(session, study, slug, datetime.now(UTC))
                  for study in studies for slug in destinations]
    return [job.id for job in queued if job is not None]


def _job(app: App, job_id: int) -> jobs.JobRecord:
    with session_scope(app.engine, readonly=True) as session:
        record = jobs.get(session, job_id)
    assert record is not None
    return record


# -- claim_due ---------------------------------------------------------------

def test_concurrent_claimers_keep_each_destination_within_its_max_associations(
    app: App, tmp_path: Path
) -> None:
    studies = _ingest(app, tmp_path / "in", 5)
    _destination(app, "wide", free_port(), max_associations=2)
    _destination(app, "narrow", free_port())
    _enqueue(app, studies, "wide", "narrow")
    at = datetime.now(UTC)
    taken: dict[str, list[jobs.JobRecord]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claim(owner: str) -> None:
        for _ in range(4):
            barrier.wait()
            with session_scope(app.engine) as session:
                taken[owner] += jobs.claim_due(session, owner, at, 60, limit=10)

    threads = [threading.Thread(target=claim, args=(owner,)) for owner in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = taken["a"] + taken["b"]
    assert sorted(job.destination for job in claimed) == ["narrow", "wide", "wide"]
    assert len({job.id for job in claimed}) == 3

    with session_scope(app.engine) as session:  # a finished job frees its association
        wide = next(job for job in claimed if job.destination == "wide")
        owner = next(name for name, records in taken.items() if wide in records)
        jobs.finish(session, wide.id, owner, at, _POLICY, error="association failed")
        assert [job.destination for job in jobs.claim_due(session, "c", at, 60, 10)] == [
            "wide"]
        assert jobs.claim_due(session, "c", at, 60, 10) == []
    with session_scope(app.engine) as session:  # expired leases count no more
        later = jobs.claim_due(session, "d", at + timedelta(seconds=61), 60, 10)
    assert sorted(job.destination for job in later) == ["narrow", "wide", "wide"]


_POLICY = jobs.RetryPolicy(max_attempts=5, first_delay_seconds=1, multiplier=1,
                           max_delay_seconds=1)


# -- retry policy ----------------------------------------------------------------

# pynetdicom 3.0 drops the socket of a refused connection without closing it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_each_destination_retries_by_its_own_policy(app: App, tmp_path: Path) -> None:
    [study] = _ingest(app, tmp_path / "in", 1)
    _destination(app, "once", free_port(), max_attempts=1)
    _destination(app, "thrice", free_port(), max_attempts=3, first_delay_seconds=7,
                 backoff_multiplier=3)
    once, thrice = _enqueue(app, [study], "once", "thrice")

    assert run_due(app).total == 2  # neither is listening
    failed, waiting = _job(app, once), _job(app, thrice)
    assert (failed.state, failed.attempts) == (JobState.FAILED, 1)
    assert "association" in failed.last_error
    assert (waiting.state, waiting.attempts) == (JobState.PENDING, 1)
    assert (waiting.next_attempt_at - waiting.updated_at).total_seconds() == 7

    run_due(app, now=waiting.next_attempt_at + timedelta(seconds=1))
    second = _job(app, thrice)
    assert (second.state, second.attempts) == (JobState.PENDING, 2)
    assert (second.next_attempt_at - second.updated_at).total_seconds() == 21  # 7 * 3

    run_due(app, now=second.next_attempt_at + timedelta(seconds=1))
    assert (_job(app, thrice).state, _job(app, thrice).attempts) == (JobState.FAILED, 3)


# -- a storage SCP that records what arrived -------------------------------------------

@dataclass
class Arrival:
    association: int
    sop_instance_uid: str
    transfer_syntax: str
    pixel_bytes: int
    started: float
    ended: float


@dataclass
class Sink:
    port: int
    arrivals: list[Arrival] = field(default_factory=list)


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A storage SCP accepting CT as RLE Lossless or uncompressed; each C-STORE takes 0.2 s."""
    ae = AE(ae_title="SINK")
    ae.add_supported_context(CTImageStorage, [RLELossless, ExplicitVRLittleEndian,
                                              ImplicitVRLittleEndian])
    lock = threading.Lock()
    recorded = Sink(port=0)
    alive: list[object] = []  # keeps id() of each association unique

    def store(event: Event) -> int:
        started = time.monotonic()
        ds = event.dataset
        time.sleep(0.2)
        arrival = Arrival(id(event.assoc), str(ds.SOPInstanceUID),
                          str(event.context.transfer_syntax), len(ds.PixelData), started,
                          time.monotonic())
        with lock:
            alive.append(event.assoc)
            recorded.arrivals.append(arrival)
        return 0x0000

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, store)])
    assert server is not None
    recorded.port = int(server.server_address[1])
    try:
        yield recorded
    finally:
        server.shutdown()


def _overlapping(arrivals: list[Arrival]) -> bool:
    return any(a.association != b.association and a.started < b.ended and b.started < a.ended
               for a in arrivals for b in arrivals)


# -- transfer syntax -------------------------------------------------------------

def test_uncompressed_destination_gets_explicit_vr_little_endian_decompressed(
    app: App, tmp_path: Path, sink: Sink
) -> None:
    [study] = _ingest(app, tmp_path / "in", 1, rle=True)
    _destination(app, "as-stored", sink.port)
    _destination(app, "plain", sink.port, transfer_syntax="uncompressed")
    _enqueue(app, [study], "as-stored")
    assert run_due(app).done == 1
    [compressed] = sink.arrivals
    _enqueue(app, [study], "plain")
    assert run_due(app).done == 1
    [_, decompressed] = sink.arrivals
    assert compressed.transfer_syntax == RLELossless  # the SCP would take it as stored
    assert decompressed.transfer_syntax == ExplicitVRLittleEndian
    assert decompressed.sop_instance_uid == compressed.sop_instance_uid
    assert decompressed.pixel_bytes == 64 * 64 * 2 > compressed.pixel_bytes


def test_an_image_that_cannot_be_decompressed_fails_alone_and_the_rest_is_sent(
    app: App, tmp_path: Path, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """T17 downstream: an encapsulated frame no decoder takes was accepted as received (the
    receiver does not decode compressed pixel data); forwarding it to a destination that
    wants it uncompressed fails that instance alone, with the reason, at the first attempt
    (no retry of what can never decode), and the study's other instances are sent."""
    [study] = _ingest(app, tmp_path / "in", 1, per_study=3, rle=True, broken=1)
    _destination(app, "plain", sink.port, transfer_syntax="uncompressed", max_attempts=3)
    [job_id] = _enqueue(app, [study], "plain")
    with caplog.at_level("WARNING", logger="gateway.forwarder"):
        report = run_due(app)
    job = _job(app, job_id)
    assert (report.failed, job.state, job.attempts, job.sent, job.failed) == (
        1, JobState.FAILED, 1, 2, 1)
    assert len(sink.arrivals) == 2
    assert {a.transfer_syntax for a in sink.arrivals} == {ExplicitVRLittleEndian}
    assert job.last_error.startswith("1 instance(s) not sent")
    [line] = [r.getMessage() for r in caplog.records if "state=failed" in r.getMessage()]
    assert "cannot be decompressed from RLE Lossless (RuntimeError)" in line
    assert run_due(app, now=datetime.now(UTC) + timedelta(days=1)).total == 0


def _associations(sink: Sink) -> list[int]:
    """The associations in the order their first C-STORE arrived."""
    seen: list[int] = []
    for arrival in sorted(sink.arrivals, key=lambda a: a.started):
        if arrival.association not in seen:
            seen.append(arrival.association)
    return seen


# -- associations at once ----------------------------------------------------------

@pytest.mark.parametrize(("max_associations", "overlap"), [(2, True), (1, False)])
def test_jobs_of_one_destination_go_in_parallel_up_to_its_max_associations(
    app: App, tmp_path: Path, sink: Sink, max_associations: int, overlap: bool
) -> None:
    studies = _ingest(app, tmp_path / "in", 2, per_study=2)
    _destination(app, "institute", sink.port, max_associations=max_associations)
    _enqueue(app, studies, "institute")
    assert run_due(app).done == 2
    assert len(sink.arrivals) == 4
    assert _overlapping(sink.arrivals) is overlap
    # one association per job sent at once; with one, the second job reuses the first's
    assert len(_associations(sink)) == max_associations
