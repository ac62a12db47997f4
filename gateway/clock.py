"""The node's clock: APScheduler fires periodic work and keeps no state of its own.

ARCHITECTURE.md, routing and forwarding: the scheduler is the clock only.
Each firing asks the database what is due (:func:`gateway.forwarder.run_due`
leases due jobs), so a restart loses nothing: the queue is the truth. Jobs
never overlap themselves (``max_instances=1``) and missed firings collapse
into one (``coalesce``). Every ``forward.poll_seconds`` the forwarder runs;
the first run is at start, so jobs left by a previous run resume at once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from .app import App
from .forwarder import run_due

__all__ = ["Clock"]

logger = logging.getLogger(__name__)


class Clock:
    """The periodic work of one node (see the module docstring)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._scheduler = BackgroundScheduler(timezone=UTC)

    def start(self) -> None:
        self._scheduler.add_job(
            self._forward, "interval", seconds=self._app.settings.forward.poll_seconds,
            id="forward", max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        self._scheduler.start()

    def stop(self) -> None:
        """Stop firing; a forward attempt in progress ends with the process (its lease expires)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _forward(self) -> None:
        try:
            report = run_due(self._app)
        except Exception:  # the clock keeps ticking; the job stays in the queue
            logger.exception("forward dispatch error")
            return
        if report.total:
            logger.info("forward dispatch done=%d retry=%d failed=%d", report.done,
                        report.retried, report.failed)
