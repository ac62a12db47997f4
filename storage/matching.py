"""Matching values of PS3.4 C.2.2.2, as typed values parsed from the text a caller sent.

A C-FIND key (or a ``study list`` filter) is a list of values, the way
pydicom splits a backslash-joined element. :func:`parse` turns it into one
:data:`Match`, by the value representation's :class:`ValueKind`:

- **universal** (C.2.2.2.2): no value, or a single ``*``, matches every
  entity; the key is only returned.
- **single value** (C.2.2.2.1): the value itself. Text compares
  case-sensitively; person names (PN) case-insensitively, a documented
  choice: the index holds pseudonyms, and viewers differ in the case they
  send. Both sides are folded with :func:`fold` (Python's ``str.lower``,
  Unicode-aware and the same on every database).
- **empty value** (C.2.2.2.1, ``""``): matches entities whose value is empty.
- **wildcard** (C.2.2.2.3): ``*`` any run of characters, ``?`` one
  character; not for UIDs, dates, times or numbers. ``%`` and ``_`` are
  ordinary characters here and are escaped in SQL (:mod:`storage.search`).
- **range** (C.2.2.2.5): ``low-high``, ``low-`` or ``-high`` for DA, TM and
  DT; a single TM or DT value is the range of its precision (``1030`` is
  10:30:00 to 10:30:59.999999). Values are checked against PS3.5 6.2.
- **list of UIDs** (C.2.2.2.4): several UIDs, any of which matches.
- **multiple values** of any other kind (for example ModalitiesInStudy
  ``CT\\MR``): any of them matches (:class:`AnyOf`).

Sequence matching (C.2.2.2.6) has nothing to act on: the index holds no code
sequences. A sequence key is returned empty, and one with matching keys
inside is reported as an unsupported optional key by the caller.

This module knows no DICOM library: it works on strings, so the CLI uses it
as the SCP does. A value that breaks its rule raises :class:`MatchError`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "AnyOf",
    "Empty",
    "Match",
    "MatchError",
    "Range",
    "Single",
    "UidList",
    "Universal",
    "ValueKind",
    "Wildcard",
    "datetime_high",
    "datetime_low",
    "fold",
    "parse",
    "time_high",
    "time_low",
]

#: The two wildcard characters of PS3.4 C.2.2.2.3.
WILDCARDS: Final = frozenset("*?")
#: Empty value matching: a value of two double quotes.
EMPTY_VALUE: Final = '""'

_DATE: Final = re.compile(r"\d{8}")
_TIME: Final = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DATETIME: Final = re.compile(
    r"(?P<date>\d{4}(\d{2}(\d{2})?)?)(?P<time>\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?"
    r"(?P<offset>[+-](0\d|1[0-4])[0-5]\d)?"
)
_NUMBER: Final = re.compile(r"[+-]?\d{1,12}")

#: A bound normalizer: ``(value) -> normalized``, raising :class:`MatchError`.
_Bound: TypeAlias = Callable[[str], str]


class ValueKind(str, enum.Enum):
    """How a key's values match, by value representation (PS3.5 6.2)."""

    TEXT = "text"  # AE, CS, LO, SH, LT, ...: case-sensitive
    PERSON = "person"  # PN: case-insensitive
    UID = "uid"  # UI: single value or list, no wildcard
    DATE = "date"  # DA
    TIME = "time"  # TM
    DATETIME = "datetime"  # DT
    NUMBER = "number"  # IS: single value


class MatchError(ValueError):
    """A value breaks the matching rule of its kind; the message names the rule."""


@dataclass(frozen=True, slots=True)
class Universal:
    """C.2.2.2.2: every entity matches."""


@dataclass(frozen=True, slots=True)
class Empty:
    """C.2.2.2.1 empty value matching: the entity's value is empty."""


@dataclass(frozen=True, slots=True)
class Single:
    """C.2.2.2.1: the entity's value equals ``value`` (folded for PN)."""

    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """C.2.2.2.3: ``pattern`` with ``*`` and ``?``."""

    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """C.2.2.2.5: ``low <= value <= high``; ``None`` leaves that end open.

    The bounds are normalized: for TM the full ``HHMMSS[.FFFFFF]`` form
    (:func:`time_low`, :func:`time_high`), for DT ``YYYYMMDDHHMMSS[.FFFFFF]``
    without an offset.
    """

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class UidList:
    """C.2.2.2.4: the entity's UID is one of ``uids``."""

    uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Several values of one key: any of them matches."""

    matches: tuple[Single | Wildcard | Empty | Range, ...]


Match = Universal | Empty | Single | Wildcard | Range | UidList | AnyOf


def fold(text: str) -> str:
    """Fold a person name for case-insensitive matching (stored and queried alike)."""
    return text.lower()


def parse(values: Sequence[str], kind: ValueKind) -> Match:
    """Turn a key's values into the match PS3.4 C.2.2.2 gives them.

    Parameters
    ----------
    values : Sequence[str]
        The key's values, already split at backslashes; padding is ignored.
    kind : ValueKind
        How the key's value representation matches.

    Returns
    -------
    Match
        One of :class:`Universal`, :class:`Empty`, :class:`Single`,
        :class:`Wildcard`, :class:`Range`, :class:`UidList`, :class:`AnyOf`.

    Raises
    ------
    MatchError
        When a value breaks its kind's rule (a wildcard in a UID, a malformed
        date or range, several values where one is allowed).
    """
    given = [value.strip(" ") for value in values]
    if not any(given) or given == ["*"]:
        return Universal()
    if kind is ValueKind.UID:
        return _uids(given)
    if len(given) == 1:
        return _one(given[0], kind)
    if kind in (ValueKind.DATE, ValueKind.TIME, ValueKind.DATETIME):
        raise MatchError("expected one value or one range, got several values")
    parts = []
    for value in given:
        part = _one(value, kind)
        if isinstance(part, Universal):
            return part
        if not isinstance(part, Single | Wildcard | Empty | Range):
            raise MatchError("expected values that can be combined")
        parts.append(part)
    return AnyOf(tuple(parts))


def _uids(given: list[str]) -> Match:
    for value in given:
        if WILDCARDS & set(value):
            raise MatchError("wildcards are not allowed in a UID (PS3.4 C.2.2.2.3)")
        if not value:
            raise MatchError("expected UIDs, got an empty value in a list of UIDs")
    if len(given) == 1:
        return Single(given[0])
    return UidList(tuple(dict.fromkeys(given)))


def _one(value: str, kind: ValueKind) -> Match:
    if value == EMPTY_VALUE:
        return Empty()
    if value == "*":
        return Universal()
    if kind is ValueKind.DATE:
        return _range(value, _date, _date, single=True)
    if kind is ValueKind.TIME:
        return _range(value, time_low, time_high, single=False)
    if kind is ValueKind.DATETIME:
        return _datetime_range(value)
    if kind is ValueKind.NUMBER:
        if not _NUMBER.fullmatch(value):
            raise MatchError(f"expected an integer (IS), got {len(value)} other characters")
        return Single(str(int(value)))
    if WILDCARDS & set(value):
        return Wildcard(value)
    return Single(value)


def _date(value: str) -> str:
    if not _DATE.fullmatch(value):
        raise MatchError("expected a date YYYYMMDD or a range of dates (PS3.5 DA)")
    return value


def time_low(value: str) -> str:
    """The first instant a TM value of any precision stands for, as ``HHMMSS[.F]``."""
    match = _TIME.fullmatch(value)
    if match is None:
        raise MatchError("expected a time HH[MM[SS[.FFFFFF]]] or a range of times (PS3.5 TM)")
    whole, _, fraction = value.partition(".")
    fraction = fraction.rstrip("0")
    return whole.ljust(6, "0") + (f".{fraction}" if fraction else "")


def time_high(value: str) -> str:
    """The last instant a TM value of any precision stands for, ``HHMMSS.FFFFFF``."""
    if _TIME.fullmatch(value) is None:
        raise MatchError("expected a time HH[MM[SS[.FFFFFF]]] or a range of times (PS3.5 TM)")
    whole, _, fraction = value.partition(".")
    return whole + "5959"[len(whole) - 2:] + "." + fraction.ljust(6, "9")


def _range(value: str, low: _Bound, high: _Bound, *, single: bool) -> Match:
    if "-" not in value:
        return Single(low(value)) if single else Range(low(value), high(value))
    first, _, second = value.partition("-")
    if not first and not second:
        raise MatchError("expected a range with at least one end, got '-'")
    return Range(low(first) if first else None, high(second) if second else None)


def datetime_low(value: str) -> str:
    """The first instant a DT value stands for, ``YYYYMMDDHHMMSS[.F]``; the offset is dropped."""
    date, time = _datetime_parts(value)
    date = date + "0101"[len(date) - 4:] if len(date) < 8 else date
    return date + (time_low(time) if time else "000000")


def datetime_high(value: str) -> str:
    """The last instant a DT value stands for, ``YYYYMMDDHHMMSS.FFFFFF``; the offset is dropped."""
    date, time = _datetime_parts(value)
    date = date + "1231"[len(date) - 4:] if len(date) < 8 else date
    return date + (time_high(time) if time else "235959.999999")


def _datetime_parts(value: str) -> tuple[str, str]:
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise MatchError("expected a date-time YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX] or a range "
                         "of them (PS3.5 DT)")
    return match.group("date"), match.group("time") or ""


def _datetime_range(value: str) -> Match:
    # a '-' may also start a UTC offset, so try the whole value as one date-time first
    if _DATETIME.fullmatch(value):
        return Range(datetime_low(value), datetime_high(value))
    for index, char in enumerate(value):
        if char != "-":
            continue
        first, second = value[:index], value[index + 1:]
        if all(not part or _DATETIME.fullmatch(part) for part in (first, second)):
            if not first and not second:
                break
            return Range(datetime_low(first) if first else None,
                         datetime_high(second) if second else None)
    raise MatchError("expected a date-time or a range of date-times (PS3.5 DT)")

