"""Destination schedules (storage.schedule): parsing, time zones, daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage.errors import StorageError
from storage.schedule import IMMEDIATE, check_schedule, is_open

WEEKNIGHTS = "* 22-23,0-5 * * mon-fri Europe/Berlin"


def test_immediate_is_always_open() -> None:
    assert check_schedule(" Immediate ") == IMMEDIATE
    assert is_open(IMMEDIATE, datetime(2026, 11, 28, 12, 0, tzinfo=UTC))


def test_a_schedule_is_kept_in_canonical_form() -> None:
    assert check_schedule("*  22-23,0-5 * *   mon-fri  Europe/Berlin") == WEEKNIGHTS


@pytest.mark.parametrize(("schedule", "message"), [
    ("22-06", "five cron fields"),
    ("* 22-23 * * mon-fri Mars/Olympus", "unknown time zone"),
    ("* 25 * * *", "peer schedule"),
    ("* * * * * * *", "five cron fields"),
])
def test_bad_schedules_are_refused_with_the_value(schedule: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        check_schedule(schedule)
    assert repr(schedule) in str(caught.value)


@pytest.mark.parametrize(("utc", "expected"), [
    # winter (CET, UTC+1): 22:00 Berlin is 21:00 UTC
    (datetime(2026, 11, 26, 20, 59, tzinfo=UTC), False),  # Thursday 21:59 in Berlin
    (datetime(2026, 11, 26, 21, 0, tzinfo=UTC), True),    # Thursday 22:00
    (datetime(2026, 11, 27, 4, 59, tzinfo=UTC), True),    # Friday 05:59
    (datetime(2026, 11, 27, 5, 0, tzinfo=UTC), False),    # Friday 06:00
    (datetime(2026, 11, 28, 22, 30, tzinfo=UTC), False),  # Saturday night: closed
    # summer (CEST, UTC+2): 22:00 Berlin is 20:00 UTC
    (datetime(2026, 7, 15, 20, 0, tzinfo=UTC), True),
    (datetime(2026, 7, 15, 19, 59, tzinfo=UTC), False),
])
def test_the_window_follows_the_zone_and_daylight_saving(utc: datetime, expected: bool) -> None:
    assert is_open(WEEKNIGHTS, utc) is expected
