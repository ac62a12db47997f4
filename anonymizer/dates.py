"""Shifting DA, TM and DT values by a per-patient offset (PS3.15 E.3.6).

Under Retain Longitudinal Temporal Information with Modified Dates every
date, time and date-time of a patient moves by the same offset, so that
intervals survive and the real dates do not. Dates move by whole days, times
by a whole number of minutes (modulo a day), and a date with its time
partner in the same dataset (StudyDate with StudyTime, ...) and every DT move
by both together, so that a study's date and time stay one instant. Values
keep their precision (a DT of only a year stays a year; TM fractions stay)
and a DT keeps its UTC offset suffix. A value that cannot be parsed returns
None: the caller replaces it with a dummy rather than keeping it.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["shift_date", "shift_date_time", "shift_datetime", "shift_time"]

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")
_DT = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$"
)


#: two-digit fields ("%m", "%d", "%H", "%M", "%S"), formatted once: a series shifts many values
_TWO = tuple(f"{number:02d}" for number in range(100))


def _year(moment: dt.date) -> str:
    """``%Y`` of ``moment`` (formatted directly: strftime costs more than the shift)."""
    return str(moment.year) if moment.year >= 1000 else moment.strftime("%Y")


def _date(moment: dt.date) -> str:
    """``%Y%m%d`` of ``moment``."""
    return _year(moment) + _TWO[moment.month] + _TWO[moment.day]


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value (``YYYYMMDD``; the ACR-NEMA ``YYYY.MM.DD`` too) by whole days."""
    match = _DA.match(value.strip())
    if not match:
        return None
    year, month, day = match.groups()
    try:
        return _date(dt.date(int(year), int(month), int(day)) + dt.timedelta(days=days))
    except (ValueError, OverflowError):
        return None


def shift_time(value: str, seconds: int) -> str | None:
    """Shift a TM value by ``seconds`` modulo a day, keeping its precision."""
    match = _TM.match(value.strip())
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        return None
    total = (int(hh) * 3600 + int(mm or 0) * 60 + min(int(ss or 0), 59) + seconds) % 86400
    out = _TWO[total // 3600]
    if mm is not None:
        out += _TWO[total // 60 % 60]
    if ss is not None:
        out += _TWO[total % 60] + (frac or "")
    return out


def shift_datetime(value: str, days: int, seconds: int) -> str | None:
    """Shift a DT value by days and seconds, keeping its precision and UTC offset."""
    match = _DT.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = dt.datetime(
            # a value without month or day stands for the middle of its period
            int(year), int(month or 7), int(day or (15 if month else 1)), int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),
        )
        moment += dt.timedelta(days=days, seconds=seconds if hour is not None else 0)
    except (ValueError, OverflowError):
        return None
    parts = [(year, _year(moment)), (month, _TWO[moment.month]), (day, _TWO[moment.day]),
             (hour, _TWO[moment.hour]), (minute, _TWO[moment.minute]),
             (second, _TWO[moment.second])]
    out = "".join(formatted for text, formatted in parts if text is not None)
    return out + (frac or "") + (zone or "")


def shift_date_time(
    date: str, time: str, days: int, seconds: int
) -> tuple[str | None, str | None]:
    """Shift a date and its partner time as one instant."""
    date_match = _DA.match(date.strip())
    time_match = _TM.match(time.strip())
    if not date_match or not time_match:
        return shift_date(date, days), shift_time(time, seconds)
    hh, mm, ss, frac = time_match.groups()
    year, month, day = date_match.groups()
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hh), int(mm or 0),
                             min(int(ss or 0), 59))
        moment += dt.timedelta(days=days, seconds=seconds)
    except (ValueError, OverflowError):
        return None, None
    new_time = _TWO[moment.hour]
    if mm is not None:
        new_time += _TWO[moment.minute]
    if ss is not None:
        new_time += _TWO[moment.second] + (frac or "")
    return _date(moment), new_time
