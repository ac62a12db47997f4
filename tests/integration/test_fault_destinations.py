"""Destinations that fail for a long time (RELIABILITY T29; I2, I4).

A study reaches the running node over C-STORE, is ingested and routed, and
is forwarded (:func:`gateway.forwarder.run_due`, what the node's clock calls,
driven here at chosen moments) to a destination that misbehaves:

- blackholed: a socket that accepts the connection and never answers. The
  association times out (``limits.acse_timeout``), the attempt ends, the job
  goes back to pending with capped exponential back-off (the destination's
  retry policy; PS3.4 B.2.3 gives no rule: ours is README "Configuration"), then
  fails after ``max_attempts``; no thread is held (I4), and ``status``
  reports the job once it is older than ``status.max_pending_age_seconds``;
- answering 0xA700 (out of resources): transient, retried after its
  back-off, and delivered once the destination recovers;
- presenting an expired TLS certificate: nothing is sent, transient;
- answering 0xC000 to every instance: a permanent refusal (PS3.4 Table
  B.2-1, Cxxx "cannot understand"), so the job is a dead letter at once
  with the status as its reason, audited, never sent again by itself, and
  ``status`` is unhealthy past ``status.max_failed_jobs``.

SQLite and PostgreSQL.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

import storage.jobs as jobs
import storage.routes as routes
from gateway.forwarder import run_due
from gateway.health import check
from gateway.node import Node
from gateway.router import route_stable
from storage import peers
from storage.audit import list_events
from storage.db import session_scope
from storage.queue_models import JobState
from storage.records import PeerRecord
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.procwatch import watched
from tests.rawpeer import FAST
from tests.sink import StoreSink
from tests.tlscerts import PKI, make_pki

# fault cases that wait out timeouts and back-offs: run in CI, not in every developer run
pytestmark = pytest.mark.slow

INSTANCES = 2
#: the destination's retry policy: 30 s, 60 s, then capped at 100 s; the 4th failure is final
POLICY = {"max_attempts": 4, "first_delay_seconds": 30, "backoff_multiplier": 2,
          "max_delay_seconds": 100}


class Blackhole:
    """A TCP listener that accepts every connection, then neither reads nor answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for held in self.held:
            held.close()
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def answering() -> Iterator[StoreSink]:
    """A Storage SCP that answers every C-STORE with 0xC000 unless its ``status`` is changed."""
    with StoreSink(status=0xC000, ae_title="REFUSER") as sink:
        yield sink


def _routed_node(make_node: Callable[..., Node], tmp_path: Path, port: int, *,
                 tls: bool = False, settings: dict[str, Any] | None = None) -> Node:
    """A node with one routed, ingested study of ``INSTANCES`` instances for ``port``."""
    # the one-second ACSE timeout is what the blackholed destination waits out; the clinic's
    # association that stores the study keeps the default idle timeouts, so that a loaded
    # machine pausing between two C-STOREs does not cut it
    node = make_node(**{**FAST, "limits.network_timeout": 30, "limits.dimse_timeout": 30,
                        "forward.poll_seconds": 3600, "forward.stable_after_seconds": 1,
                        **(settings or {})})
    with session_scope(node.app.engine) as session:
        peers.add(session, PeerRecord(slug="institute", ae_title="INSTITUTE", host="127.0.0.1",
                                      port=port, roles=("destination",), tls=tls, **POLICY))
        routes.add(session, routes.RouteSpec(name="all-ct", destinations=("institute",),
                                             conditions=("ModalitiesInStudy=CT",)))
    study = make_clinic_study(tmp_path / "study", series=1, per_series=INSTANCES, jpeg=False)
    datasets = [dcmread(path) for path in study.files.values()]
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0x0000] * INSTANCES
    finally:
        assoc.release()
    wait_until(lambda: node.app.spool.oldest() is None, timeout=15, what="ingested")
    assert route_stable(node.app, datetime.now(UTC) + timedelta(seconds=5)) == 1
    return node


def _queue_problems(node: Node, now: datetime | None = None) -> list[str]:
    """What ``dicom-gateway status`` says about the queue (a test node's configured port is
    0, so its listener line is left out)."""
    return [p for p in check(node.app, now=now).problems if p.startswith("queue:")]


def _job(node: Node) -> jobs.JobRecord:
    with session_scope(node.app.engine, readonly=True) as session:
        [job] = jobs.list_jobs(session)
    return job


def test_a_blackholed_destination_times_out_backs_off_and_holds_no_thread(
        make_node: Callable[..., Node], tmp_path: Path, blackhole: Blackhole) -> None:
    """T29 transient: each attempt ends at the ACSE timeout; waits of 30, 60 and (capped)
    100 s between attempts; the fourth failure makes the job a dead letter, kept with its
    reason; threads, descriptors and RSS back to their baseline; ``status`` flags the job
    once it is pending longer than ``status.max_pending_age_seconds``."""
    node = _routed_node(make_node, tmp_path, blackhole.port)
    created = _job(node).created_at
    waits = []
    with watched(node):
        moment = created + timedelta(seconds=5)
        for attempt in range(1, POLICY["max_attempts"] + 1):
            report = run_due(node.app, now=moment)
            job = _job(node)
            assert job.attempts == attempt and job.sent == 0
            if attempt < POLICY["max_attempts"]:
                assert (report.retried, job.state) == (1, JobState.PENDING)
                assert run_due(node.app, now=job.next_attempt_at - timedelta(seconds=1)).total \
                    == 0, "taken before its back-off ended"
                waits.append(int((job.next_attempt_at - job.updated_at).total_seconds()))
                moment = job.next_attempt_at
            if attempt == 1:  # the alert: pending longer than the threshold, seen by status
                late = created + timedelta(
                    seconds=node.app.settings.status.max_pending_age_seconds + 60)
                assert _queue_problems(node) == []
                assert [p for p in _queue_problems(node, late)
                        if f"job {job.id} to institute pending" in p]
        assert report.failed == 1 and job.state is JobState.FAILED
        assert job.last_error, "a dead letter keeps its reason"
    assert waits == [30, 60, 100]
    assert len(blackhole.held) == POLICY["max_attempts"]  # one association per attempt


def test_a_destination_refusing_every_instance_is_a_dead_letter_at_once(
        make_node: Callable[..., Node], tmp_path: Path,
        answering: StoreSink) -> None:
    """T29 permanent: 0xC000 for every instance ends the job as failed after one attempt,
    each instance offered once, with the status in its reason and a ``forward`` failure
    audited; later passes send nothing (no infinite retry); ``status`` is unhealthy with
    more failed jobs than ``status.max_failed_jobs`` (0 by default)."""
    offered = answering.offered
    node = _routed_node(make_node, tmp_path, answering.port)
    assert _queue_problems(node) == []
    with watched(node):
        report = run_due(node.app, now=datetime.now(UTC) + timedelta(seconds=5))
    job = _job(node)
    assert (report.failed, job.state, job.attempts, job.failed) == (
        1, JobState.FAILED, 1, INSTANCES)
    assert len(offered) == INSTANCES
    assert job.last_error == f"{INSTANCES} instance(s) refused by the destination (status 0xC000)"
    for later in (timedelta(hours=1), timedelta(days=2)):
        assert run_due(node.app, now=datetime.now(UTC) + later).total == 0
    assert len(offered) == INSTANCES
    with session_scope(node.app.engine, readonly=True) as session:
        [audited] = list_events(session, event="forward")
    assert audited.outcome.value == "failure" and "state=failed" in audited.detail
    assert [p for p in _queue_problems(node) if p.startswith("queue: 1 failed forward jobs")]


def test_a_destination_out_of_resources_is_retried_and_gets_the_study_once_it_recovers(
        make_node: Callable[..., Node], tmp_path: Path,
        answering: StoreSink) -> None:
    """T29 transient: 0xA700 (out of resources) stops the attempt at the first instance and
    the job waits its back-off, reason kept; once the destination answers 0x0000 the next
    attempt delivers every instance and the job is done."""
    offered = answering.offered
    answering.status = 0xA700
    node = _routed_node(make_node, tmp_path, answering.port)
    report = run_due(node.app, now=datetime.now(UTC) + timedelta(seconds=5))
    job = _job(node)
    assert (report.retried, job.state, job.sent, len(offered)) == (1, JobState.PENDING, 0, 1)
    assert job.last_error == "destination out of resources (0xA700)"
    assert int((job.next_attempt_at - job.updated_at).total_seconds()) == 30
    answering.status = 0x0000
    assert run_due(node.app, now=job.next_attempt_at).done == 1
    job = _job(node)
    assert (job.state, job.sent, job.attempts) == (JobState.DONE, INSTANCES, 2)
    assert len(offered) == 1 + INSTANCES


def test_a_warning_status_counts_as_delivered(make_node: Callable[..., Node], tmp_path: Path,
                                             answering: StoreSink) -> None:
    """PS3.4 B.2.3: 0xB000-0xBFFF (coercion of data elements, elements discarded, data set
    does not match the SOP class) are warnings: the instance is stored, so the job is done
    at the first attempt and nothing is sent again."""
    answering.status = 0xB007
    node = _routed_node(make_node, tmp_path, answering.port)
    assert run_due(node.app, now=datetime.now(UTC) + timedelta(seconds=5)).done == 1
    job = _job(node)
    assert (job.state, job.sent, job.failed, job.attempts) == (JobState.DONE, INSTANCES, 0, 1)
    assert run_due(node.app, now=datetime.now(UTC) + timedelta(days=1)).total == 0
    assert len(answering.offered) == INSTANCES


@pytest.fixture
def expired_tls_destination(tmp_path: Path) -> Iterator[tuple[int, PKI]]:
    """A Storage SCP over DICOM TLS whose server certificate expired yesterday."""
    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.expired.certificate, pki.expired.private_key)
    ae = AE(ae_title="INSTITUTE")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=context)
    yield int(server.server_address[1]), pki
    server.shutdown()


def test_a_destination_with_an_expired_certificate_is_retried_not_sent_in_clear(
        make_node: Callable[..., Node], tmp_path: Path,
        expired_tls_destination: tuple[int, PKI], caplog: pytest.LogCaptureFixture) -> None:
    """T29, PS3.15 B.1 (the server's certificate is verified): a destination whose
    certificate expired gets no instance, over TLS or in clear; the failure is transient
    (an administrator renews the certificate), so the job backs off with the reason kept.
    The job says the association failed; the log says why (pynetdicom logs the TLS
    error and does not pass it on)."""
    port, pki = expired_tls_destination
    node = _routed_node(make_node, tmp_path, port, tls=True,
                        settings={"tls.ca_certificates": str(pki.ca)})
    with watched(node):
        report = run_due(node.app, now=datetime.now(UTC) + timedelta(seconds=5))
    job = _job(node)
    assert (report.retried, job.state, job.attempts, job.sent) == (1, JobState.PENDING, 1, 0)
    assert job.last_error == f"association with institute (127.0.0.1:{port}) failed"
    assert "certificate has expired" in caplog.text
    assert int((job.next_attempt_at - job.updated_at).total_seconds()) == 30
