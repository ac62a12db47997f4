"""The wall clock stepping under a running node (RELIABILITY T30).

A controllable wall clock (:class:`SteppedClock`) replaces ``datetime.now``
where the node's periodic work reads it: APScheduler's scheduler and
executor (gateway/clock.py), the router and the forwarder. Steps of +1 h
and back, as NTP or a person makes them, must not stop the node's clock
(APScheduler 3 sleeps until a wall-clock time), must not send a study
twice, and must not drop one: a destination's schedule window
(storage/schedule.py, wall-clock windows by design) sends its study once,
when the clock is in the window, however often the clock steps in and out.
The association timers (ARTIM, the idle network timeout) measure elapsed
time: a step of ``time.time`` neither aborts an association in use nor keeps
an idle one. SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

import apscheduler.executors.base
import apscheduler.schedulers.base
import gateway.clock
import gateway.forwarder
import gateway.router
import storage.jobs as jobs
import storage.routes as routes
from gateway.node import Node
from gateway.tls import close_transport
from storage import peers
from storage.db import session_scope
from storage.queue_models import JobState
from storage.records import PeerRecord
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import free_port
from tests.retrieve_store import Destination
from tests.sink import StoreSink

# fault cases that wait out timeouts and clock steps: run in CI, not in every developer run
pytestmark = pytest.mark.slow

#: where the node's periodic work reads the wall clock
_READERS = (apscheduler.schedulers.base, apscheduler.executors.base, gateway.clock,
            gateway.forwarder, gateway.router)


class SteppedClock:
    """``datetime.now`` plus an offset that the test steps (:meth:`step`)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        clock = self

        class _Stepped(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Any:
                return datetime.now(tz) + clock.offset

        self.datetime = _Stepped

    def step(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
def stepped(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    clock = SteppedClock()
    for module in _READERS:
        monkeypatch.setattr(module, "datetime", clock.datetime)
    return clock


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """When each firing of the node's clock dispatched (real time), counted as it happens."""
    fired: list[datetime] = []
    lock = threading.Lock()
    run_due = gateway.clock.run_due

    def counted(app: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            fired.append(datetime.now(UTC))
        return run_due(app, *args, **kwargs)

    monkeypatch.setattr(gateway.clock, "run_due", counted)
    return fired


@pytest.fixture
def destination() -> Iterator[Destination]:
    started = Destination().start()
    yield started
    started.stop()


def test_a_step_back_of_an_hour_does_not_stop_the_clock(
        make_node: Callable[..., Node], stepped: SteppedClock, ticks: list[datetime]) -> None:
    """T30: after the wall clock steps back 1 h the node's clock keeps firing every
    ``forward.poll_seconds`` (APScheduler alone would sleep that hour: no routing, no
    forwarding); after it steps forward again the missed firings collapse into one."""
    make_node(**{"forward.poll_seconds": 1})
    wait_until(lambda: len(ticks) >= 2, timeout=10, what="the clock firing")
    stepped.step(timedelta(hours=-1))
    before = len(ticks)
    wait_until(lambda: len(ticks) >= before + 2, timeout=10,
               what="firings after the wall clock stepped back an hour")
    stepped.step(timedelta(hours=1))
    before = len(ticks)
    wait_until(lambda: len(ticks) >= before + 2, timeout=10,
               what="firings after the wall clock stepped forward an hour")
    # one firing for the hour skipped, not 3,600 (coalesced, max_instances=1)
    assert len(ticks) - before <= 4


def _jobs(node: Node) -> list[jobs.JobRecord]:
    with session_scope(node.app.engine, readonly=True) as session:
        return jobs.list_jobs(session)


def _routed_node(make_node: Callable[..., Node], tmp_path: Path, instances: int,
                 **peer: Any) -> Node:
    """A node ticking every second, a route of every CT study to the peer ``institute``
    (``peer``: its port and options), and a study of ``instances`` stored over C-STORE."""
    node = make_node(**{"forward.poll_seconds": 1, "forward.stable_after_seconds": 1})
    with session_scope(node.app.engine) as session:
        peers.add(session, PeerRecord(slug="institute", ae_title="DESTINATION",
                                      host="127.0.0.1", roles=("destination",), **peer))
        routes.add(session, routes.RouteSpec(name="all-ct", destinations=("institute",),
                                             conditions=("ModalitiesInStudy=CT",)))
    study = make_clinic_study(tmp_path / "study", series=1, per_series=instances, jpeg=False)
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        assert {int(assoc.send_c_store(dcmread(p)).Status) for p in study.files.values()} == {0}
    finally:
        assoc.release()
    return node


def test_a_schedule_window_sends_once_however_the_clock_steps(
        make_node: Callable[..., Node], stepped: SteppedClock, ticks: list[datetime],
        destination: Destination, tmp_path: Path) -> None:
    """T30: a destination open only during the next hour (UTC). Outside it the routed job
    waits; a step of +1 h into the window sends the study once; stepping back out and into
    the window again sends nothing more; the job is done after exactly one attempt."""
    window_hour = (datetime.now(UTC) + timedelta(hours=1)).hour
    node = _routed_node(make_node, tmp_path, 2, port=destination.port,
                        schedule=f"* {window_hour} * * *")
    wait_until(lambda: len(_jobs(node)) == 1, timeout=20, what="the study routed")
    fired = len(ticks)
    wait_until(lambda: len(ticks) >= fired + 2, timeout=10, what="firings outside the window")
    assert destination.arrived == [] and _jobs(node)[0].state is JobState.PENDING

    stepped.step(timedelta(hours=1))  # into the window
    wait_until(lambda: _jobs(node)[0].state is JobState.DONE, timeout=20,
               what="the study sent in its window")
    assert len(destination.arrived) == 2
    for delta in (timedelta(hours=-1), timedelta(hours=1)):  # out of the window and back
        stepped.step(delta)
        fired = len(ticks)
        wait_until(lambda: len(ticks) >= fired + 2, timeout=10, what="firings after the step")
    [job] = _jobs(node)
    assert (job.state, job.attempts, job.sent) == (JobState.DONE, 1, 2)
    assert len(destination.arrived) == 2


# -- association timers ---------------------------------------------------------------------

def _echo_association(port: int) -> Any:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    return assoc


@pytest.mark.parametrize("step", [timedelta(hours=1), timedelta(hours=-1)],
                         ids=["forward", "back"])
def test_a_wall_clock_step_neither_aborts_nor_holds_an_association(
        make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch,
        step: timedelta) -> None:
    """T30, PS3.8 9.1.5 (ARTIM) and the idle ``limits.network_timeout``: timers measure
    elapsed time, so a step of the wall clock changes nothing. Forward: an association in
    use is not aborted as if it had been idle for an hour. Back: an idle one is still
    released by the node after ``network_timeout``, not an hour later."""
    node = make_node(**{"limits.network_timeout": 2})
    assoc = _echo_association(node.port)
    try:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + step.total_seconds())
        assert int(assoc.send_c_echo().Status) == 0x0000  # not aborted by the step
        if step > timedelta(0):
            assoc.release()
            assert assoc.is_released
        else:  # left idle: the node ends it at its network_timeout
            wait_until(lambda: not assoc.is_established, timeout=10,
                       what="the idle association ended by the node")
            assert assoc.is_aborted or assoc.is_released
    finally:
        if assoc.is_established:
            assoc.abort()
        close_transport(assoc)  # pynetdicom leaves the socket of an ended association open


# -- back-off --------------------------------------------------------------------------------

# pynetdicom 3.0 drops the socket of a refused connection without closing it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_step_back_does_not_hold_a_retry_for_the_length_of_the_step(
        make_node: Callable[..., Node], stepped: SteppedClock, ticks: list[datetime],
        tmp_path: Path) -> None:
    """T30: a job backing off 30 s from an unreachable destination is tried again soon after
    the wall clock steps back an hour (one early attempt, storage.jobs.claim_due), not an
    hour later; after that attempt its new back-off holds in the new timeline."""
    node = _routed_node(make_node, tmp_path, 1, port=free_port(),  # nothing listens
                        first_delay_seconds=30)

    def attempts() -> int:
        found = _jobs(node)
        return found[0].attempts if found else 0

    def after_two_firings() -> int:
        fired = len(ticks)
        wait_until(lambda: len(ticks) >= fired + 2, timeout=10, what="two firings")
        return attempts()

    wait_until(lambda: attempts() == 1, timeout=20, what="the first attempt failing")
    assert after_two_firings() == 1, "retried before its back-off"
    stepped.step(timedelta(hours=-1))
    wait_until(lambda: attempts() == 2, timeout=10, what="a retry soon after the step back")
    assert after_two_firings() == 2, "the new back-off holds"
    assert _jobs(node)[0].state is JobState.PENDING


def test_a_step_forward_does_not_take_a_job_from_its_own_running_lane(
        make_node: Callable[..., Node], stepped: SteppedClock, ticks: list[datetime],
        tmp_path: Path) -> None:
    """T30: an hour's step forward, while a job is being sent slowly, makes its lease (600 s)
    look expired; the node's next dispatches must not claim it again for another lane
    (gateway.forwarder: the jobs in flight are never claimed), so each instance reaches
    the destination once, and the job is done."""
    with StoreSink(ae_title="DESTINATION", delay=1.0) as sink:
        node = _routed_node(make_node, tmp_path, 4, port=sink.port)
        wait_until(lambda: len(sink.offered) >= 1, timeout=30, what="the job being sent")
        stepped.step(timedelta(hours=1))
        fired = len(ticks)
        wait_until(lambda: len(ticks) >= fired + 2, timeout=10, what="dispatches after the step")
        wait_until(lambda: bool(_jobs(node)) and _jobs(node)[0].state is JobState.DONE,
                   timeout=30, what="the job done")
        assert len(sink.offered) == 4 and len(set(sink.offered)) == 4, sink.offered
