"""The node's health as ``dicom-gateway status`` reports it, for people and for monitoring.

What is looked at: each listener of the configuration, the plain one and
the DICOM TLS one (and whether its port accepts a TCP connection; for TLS
the probe does not start a handshake), the spool (entries waiting to be
de-identified, the oldest one), the quarantine (entries held for a person,
their bytes), the forward queue by destination and state, the oldest job
still to be sent, and the free space of the data folder's file system, and
of the spool's when ``storage.spool_dir`` is on another one.

The node is *unhealthy* when any of these holds (the thresholds are
``[status]`` settings):

- a listener's port does not accept a connection (the node is down, or
  another program holds the port);
- the data folder's file system, or the spool's when it is another, has
  less than ``min_free_disk_mb`` free (when the spool's is full, stores are
  refused with 0xA700; when only the store's is, acknowledged instances
  wait in the spool until space frees: RELIABILITY T27);
- more than ``max_failed_jobs`` forward jobs have failed (dead letters that
  need ``queue retry`` or a look at the destination);
- the oldest pending job is older than ``max_pending_age_seconds`` (a
  destination unreachable, or a schedule that never opens);
- more than ``max_spool_depth`` entries wait in the spool (the ingest
  workers are not keeping up or not running).

Quarantined instances are reported but do not make the node unhealthy: they
wait for a person's review by design. The probe is read-only, apart from a
TCP connection opened and closed on each listener.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import storage.status as status
from storage.db import session_scope
from storage.queue_models import JobState

from .app import App

__all__ = ["Health", "Listener", "check", "configured_listeners", "probe"]

#: seconds a listener has to accept the probe's connection
PROBE_TIMEOUT = 2.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class Listener:
    """One configured listener and whether its port answered."""

    ae_title: str
    bind: str
    port: int
    answering: bool
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    """One look at the node (see the module docstring); ``problems`` empty means healthy."""

    checked_at: datetime
    listeners: list[Listener]
    spool_depth: int
    spool_oldest: datetime | None
    quarantine_held: int
    quarantine_bytes: int
    queue: list[status.QueueCount]
    oldest_pending: tuple[int, str, datetime] | None
    data_dir: Path
    disk_free_bytes: int
    disk_total_bytes: int
    #: (folder, free bytes, total bytes) of the spool's file system when it is not the data
    #: folder's
    spool_disk: tuple[Path, int, int] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, snake_case keys, ISO 8601 UTC times."""
        by_destination: dict[str, dict[str, int]] = {}
        for count in self.queue:
            states = by_destination.setdefault(
                count.destination, {state.value: 0 for state in JobState})
            states[count.state.value] = count.jobs
        totals = {state.value: sum(c.jobs for c in self.queue if c.state is state)
                  for state in JobState}
        oldest = None
        if self.oldest_pending is not None:
            job_id, destination, created = self.oldest_pending
            oldest = {"id": job_id, "destination": destination, "created_at": _iso(created),
                      "age_seconds": int((self.checked_at - created).total_seconds())}
        return {
            "healthy": self.healthy,
            "problems": list(self.problems),
            "checked_at": _iso(self.checked_at),
            "listeners": [{"ae_title": x.ae_title, "bind": x.bind, "port": x.port,
                           "tls": x.tls, "answering": x.answering} for x in self.listeners],
            "spool": {"depth": self.spool_depth, "oldest": _iso(self.spool_oldest)},
            "quarantine": {"held": self.quarantine_held, "bytes": self.quarantine_bytes},
            "queue": {"by_state": totals, "by_destination": by_destination,
                      "oldest_pending": oldest},
            "disk": {"data_dir": str(self.data_dir), "free_bytes": self.disk_free_bytes,
                     "total_bytes": self.disk_total_bytes,
                     "spool": None if self.spool_disk is None else {
                         "dir": str(self.spool_disk[0]), "free_bytes": self.spool_disk[1],
                         "total_bytes": self.spool_disk[2]}},
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def configured_listeners(app: App) -> list[tuple[int, bool]]:
    """(port, is TLS) of each listener the configuration starts (``Node.start``)."""
    tls = app.settings.tls
    found = [(tls.port, True)] if tls.enabled else []
    if not tls.enabled or tls.plain_listener:
        found.insert(0, (app.settings.listener.port, False))
    return found


def probe(bind: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``bind``:``port`` accepts a TCP connection (a wildcard bind is tried on loopback)."""
    host = _WILDCARDS.get(bind, bind)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:  # released or deleted meanwhile
                continue
    return total


def check(app: App, *, now: datetime | None = None) -> Health:
    """Look at the node once and judge it (see the module docstring for the rules).

    Parameters
    ----------
    app : App
        The node's parts (its settings name the listeners and thresholds).
    now : datetime | None
        The time to judge ages against; the current time by default.

    Returns
    -------
    Health
    """
    moment = now or datetime.now(UTC)
    settings = app.settings
    listeners = [Listener(settings.node.ae_title, settings.listener.bind, port,
                          probe(settings.listener.bind, port), tls)
                 for port, tls in configured_listeners(app)]
    with session_scope(app.engine, readonly=True) as session:
        queue = status.queue_counts(session)
        oldest = status.oldest_pending(session)
        held = status.quarantine_held(session)
    usage = shutil.disk_usage(app.data_dir)
    spool_dir = app.spool.root
    spool_disk = None
    if os.stat(spool_dir).st_dev != os.stat(app.data_dir).st_dev:
        spool_usage = shutil.disk_usage(spool_dir)
        spool_disk = (spool_dir, spool_usage.free, spool_usage.total)
    health = Health(
        checked_at=moment, listeners=listeners, spool_depth=app.spool.depth(),
        spool_oldest=app.spool.oldest(), quarantine_held=held,
        quarantine_bytes=_folder_bytes(app.spool.quarantined), queue=queue,
        oldest_pending=oldest, data_dir=app.data_dir, disk_free_bytes=usage.free,
        disk_total_bytes=usage.total, spool_disk=spool_disk,
    )
    health.problems.extend(_problems(app, health))
    return health


def _problems(app: App, health: Health) -> list[str]:
    limits = app.settings.status
    found = [f"listener {x.bind}:{x.port} ({x.ae_title}{', TLS' if x.tls else ''}) "
             "does not accept connections" for x in health.listeners if not x.answering]
    disks = [(health.data_dir, health.disk_free_bytes)]
    if health.spool_disk is not None:
        disks.append(health.spool_disk[:2])
    for folder, free in disks:
        free_mb = free // (1024 * 1024)
        if free_mb < limits.min_free_disk_mb:
            found.append(f"disk: {free_mb} MB free under {folder}, "
                         f"below status.min_free_disk_mb={limits.min_free_disk_mb}")
    failed = sum(c.jobs for c in health.queue if c.state is JobState.FAILED)
    if failed > limits.max_failed_jobs:
        found.append(f"queue: {failed} failed forward jobs, more than "
                     f"status.max_failed_jobs={limits.max_failed_jobs} (queue list --state failed)")
    if health.oldest_pending is not None and limits.max_pending_age_seconds:
        job_id, destination, created = health.oldest_pending
        age = int((health.checked_at - created).total_seconds())
        if age > limits.max_pending_age_seconds:
            found.append(f"queue: job {job_id} to {destination} pending for {age}s, more than "
                         f"status.max_pending_age_seconds={limits.max_pending_age_seconds}")
    if limits.max_spool_depth and health.spool_depth > limits.max_spool_depth:
        found.append(f"spool: {health.spool_depth} entries waiting, more than "
                     f"status.max_spool_depth={limits.max_spool_depth}")
    return found
