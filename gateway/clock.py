"""The node's clock: APScheduler fires periodic work and keeps no state of its own.

ARCHITECTURE.md, routing and forwarding: the scheduler is the clock only.
Each firing asks the database what is due: the stability sweep
(:func:`gateway.router.route_stable`) queues jobs for studies that became
stable, then :func:`gateway.forwarder.run_due` leases and sends due jobs,
then :func:`gateway.results.purge_delivered` removes the re-identified
results the clinics have received. A second job reports this node's spool
backlog to the other nodes (:func:`gateway.router.report_spool`), apart
from the first so that a long forward does not hold it up.
A restart loses nothing: the index and the queue are the truth. Firings
never overlap (``max_instances=1``) and missed ones collapse into one
(``coalesce``). The clock fires every ``forward.poll_seconds``, first at
start, so work left by a previous run resumes at once. ``stop()`` lets a
firing in progress end for a few seconds, so that the database connections
it holds go back before the node closes its engine; a forward attempt that
takes longer ends with the process (its lease expires).

Wall-clock steps (NTP, a person setting the clock; RELIABILITY T30).
APScheduler 3 keeps each job's next run as a wall-clock time and sleeps
until it: after a step back by an hour it would sleep that hour, and the
node would neither route nor forward meanwhile. :class:`_SteadyScheduler`
waits at most one interval at a time (a ``threading.Event`` wait, which
runs on the monotonic clock), and pulls a next run that lies more than two
intervals ahead back to now. A step forward makes the missed firings one
(``coalesce``), run at once however late (no ``misfire_grace_time``).
Schedule windows (:mod:`storage.schedule`) are wall-clock windows by
design, and what is sent is decided by the queue in the database: a step
back into a window already served sends nothing again, and a step forward
over part of one leaves its jobs for the next window, never drops them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from .app import App
from .forwarder import run_due
from .results import purge_delivered
from .router import report_spool, route_stable

__all__ = ["Clock"]

logger = logging.getLogger(__name__)

#: how long stop() lets a firing in progress end
_STOP_WAIT_SECONDS = 5.0


class _SteadyScheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler's background scheduler, made robust to wall-clock steps (module notes)."""

    def __init__(self, interval: timedelta) -> None:
        super().__init__(timezone=UTC)
        self._interval = interval

    def _process_jobs(self) -> float | None:
        now = datetime.now(UTC)
        for job in self.get_jobs():
            ahead = job.next_run_time - now if job.next_run_time is not None else None
            if ahead is not None and ahead > 2 * self._interval:
                logger.warning("clock stepped back: job=%s next run %.0fs ahead, now instead",
                               job.id, ahead.total_seconds())
                job.modify(next_run_time=now)
        wait: float | None = super()._process_jobs()
        limit = self._interval.total_seconds()
        return limit if wait is None else min(wait, limit)


class Clock:
    """The periodic work of one node (see the module docstring)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._scheduler = _SteadyScheduler(timedelta(seconds=app.settings.forward.poll_seconds))
        self._idle = threading.Condition()
        self._running = 0

    def start(self) -> None:
        for job_id, work in (("forward", self._tick), ("spool-report", self._report)):
            self._scheduler.add_job(
                self._counted(work), "interval", seconds=self._app.settings.forward.poll_seconds,
                id=job_id, max_instances=1, coalesce=True, misfire_grace_time=None,
                next_run_time=datetime.now(UTC))
        self._scheduler.start()

    def stop(self) -> None:
        """Stop firing; wait a little for a firing in progress (see the module docstring)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0, timeout=_STOP_WAIT_SECONDS)

    def _counted(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self._idle:
                self._running += 1
            try:
                work()
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()
        return run

    def _report(self) -> None:
        try:
            report_spool(self._app)
        except Exception:  # the clock keeps ticking; the next report replaces this one
            logger.exception("spool report error")

    def _tick(self) -> None:
        """Route what became stable, then send what is due (jobs just queued included)."""
        try:
            route_stable(self._app)
        except Exception:  # the clock keeps ticking; the studies are routed next time
            logger.exception("route sweep error")
        try:
            report = run_due(self._app)
        except Exception:  # the clock keeps ticking; the job stays in the queue
            logger.exception("forward dispatch error")
            return
        if report.total:
            logger.info("forward dispatch done=%d retry=%d failed=%d", report.done,
                        report.retried, report.failed)
        try:
            purge_delivered(self._app)
        except Exception:  # the files are removed next time
            logger.exception("purge of delivered results error")
