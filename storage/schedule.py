"""Destination schedules: when a destination may be sent to (ARCHITECTURE.md, routing).

A schedule is ``immediate`` (always open) or a cron expression of five
fields (minute, hour, day of month, month, day of week; APScheduler's cron
syntax, ``mon-fri``, ``22-23,0-5``) optionally followed by a time zone name
(IANA, e.g. ``Europe/Berlin``; UTC when absent). The window is open during
every minute the expression matches, in that zone, daylight saving
included: ``* 22-23,0-5 * * mon-fri Europe/Berlin`` is weeknights
22:00-06:00 Berlin time (the hours after midnight belong to the weekday the
expression names, Tuesday to Saturday mornings here). APScheduler parses and
matches the expression; nothing here re-implements cron.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from .errors import StorageError

__all__ = ["IMMEDIATE", "check_schedule", "is_open"]

IMMEDIATE = "immediate"


def _trigger(schedule: str) -> CronTrigger:
    fields = schedule.split()
    if len(fields) not in (5, 6):
        raise StorageError(
            f"peer schedule: expected 'immediate' or five cron fields and an optional time "
            f"zone (e.g. '* 22-23,0-5 * * mon-fri Europe/Berlin'), got {schedule!r}")
    zone = "UTC"
    if len(fields) == 6:
        zone = fields.pop()
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise StorageError(f"peer schedule: unknown time zone {zone!r} in {schedule!r}") from None
    try:
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as exc:
        raise StorageError(f"peer schedule: {exc} in {schedule!r}") from None


def check_schedule(schedule: str) -> str:
    """The schedule in canonical form (single spaces); :class:`StorageError` when invalid."""
    if not isinstance(schedule, str):
        raise StorageError(f"peer schedule: expected text, got {schedule!r}")
    canonical = " ".join(schedule.split())
    if canonical.lower() == IMMEDIATE:
        return IMMEDIATE
    _trigger(canonical)
    return canonical


def is_open(schedule: str, now: datetime) -> bool:
    """Whether the window is open at ``now`` (timezone-aware): the minute matches."""
    if schedule == IMMEDIATE:
        return True
    minute = now.replace(second=0, microsecond=0)
    fire = _trigger(schedule).get_next_fire_time(None, minute)
    return fire is not None and abs(fire - minute) < timedelta(seconds=1)
