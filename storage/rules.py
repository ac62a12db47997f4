"""Route conditions: the ``KEYWORD=PATTERN`` grammar and the keywords the index holds.

A route's condition names a keyword and a pattern (ARCHITECTURE.md, routing
and forwarding). :func:`parse_condition` checks both when a route is added,
so that a stored route always evaluates; :mod:`gateway.routing` evaluates
the parsed conditions against a study's :class:`StudyFacts`.

PATTERN is one of:

- a **glob**: ``*`` any run of characters, ``?`` one character, everything
  else literal; case-sensitive, matched against the whole value. ``CT``,
  ``CHEST*``, ``clinic-?``.
- ``re:`` and a Python regular expression, matched against the whole value
  (``re.fullmatch``), case-sensitive unless it says ``(?i)``. A regular
  expression that does not compile is refused here.
- ``range:LOW-HIGH`` for dates (``YYYYMMDD``), times (``HH[MM[SS[.F]]]``,
  widened to their precision as PS3.4 C.2.2.2.5 does) and numbers
  (non-negative, decimals allowed); either end may be left open:
  ``range:20260101-``, ``range:-12``. Which of the three follows from the
  keyword; a range on a text keyword is refused.
- any of them negated with a leading ``!``: ``SendingPeer=!clinic-b``,
  ``StudyDescription=!re:(?i).*test.*``. A glob that starts with a literal
  ``!``, ``re:`` or ``range:`` is written as a ``re:`` pattern.

Values: every keyword is single-valued except the series-level ones, which
hold the distinct values of the study's series (and ModalitiesInStudy and
SOPClassesInStudy). An empty value counts as no value: a condition matches
when any value matches, a negated one when none does, so ``KEYWORD=!*``
matches the studies where that keyword is empty. This module is pure (no
database); :mod:`storage.routes` reads the facts.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from .errors import StorageError
from .matching import MatchError, time_high, time_low

__all__ = [
    "KEYWORDS",
    "Condition",
    "Glob",
    "Keyword",
    "Level",
    "Range",
    "Regex",
    "StudyFacts",
    "ValueType",
    "glob_regex",
    "parse_condition",
]

#: The pattern prefixes; a pattern without one is a glob.
REGEX_PREFIX: Final = "re:"
RANGE_PREFIX: Final = "range:"
NEGATION: Final = "!"

_NUMBER: Final = re.compile(r"\d+(\.\d+)?")
_DATE: Final = re.compile(r"\d{8}")


class Level(str, enum.Enum):
    """Where a keyword's value comes from: the patient, the study, or its series."""

    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"


class ValueType(str, enum.Enum):
    """How a keyword's values compare in a ``range:`` (PS3.5 DA, TM, IS; text has none)."""

    TEXT = "text"
    DATE = "date"
    TIME = "time"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class Keyword:
    """A keyword a condition may name: its level, the column it reads, its type.

    ``multi`` keywords hold several values (the series' values, or a
    backslash-joined study column when ``level`` is ``study``).
    """

    level: Level
    column: str
    type: ValueType = ValueType.TEXT
    multi: bool = False


_T, _DA, _TM, _IS = ValueType.TEXT, ValueType.DATE, ValueType.TIME, ValueType.NUMBER
_P, _ST, _SE = Level.PATIENT, Level.STUDY, Level.SERIES

#: Every keyword a condition may name (DICOM keywords, plus SendingPeer: the
#: slug of the peer that sent the study), with the index column it reads.
KEYWORDS: Final[Mapping[str, Keyword]] = {
    "SendingPeer": Keyword(_ST, "source_peer"),
    "CallingAETitle": Keyword(_ST, "calling_ae_title"),
    "PatientID": Keyword(_P, "patient_id"),
    "PatientName": Keyword(_P, "patient_name"),
    "PatientSex": Keyword(_P, "patient_sex"),
    "PatientBirthDate": Keyword(_P, "patient_birth_date", _DA),
    "StudyInstanceUID": Keyword(_ST, "study_instance_uid"),
    "StudyDate": Keyword(_ST, "study_date", _DA),
    "StudyTime": Keyword(_ST, "study_time", _TM),
    "AccessionNumber": Keyword(_ST, "accession_number"),
    "StudyID": Keyword(_ST, "study_id"),
    "StudyDescription": Keyword(_ST, "study_description"),
    "ReferringPhysicianName": Keyword(_ST, "referring_physician_name"),
    "ModalitiesInStudy": Keyword(_SE, "modality", multi=True),
    "SOPClassesInStudy": Keyword(_ST, "sop_classes_in_study", multi=True),
    "NumberOfStudyRelatedSeries": Keyword(_ST, "number_of_study_related_series", _IS),
    "NumberOfStudyRelatedInstances": Keyword(_ST, "number_of_study_related_instances", _IS),
    "Modality": Keyword(_SE, "modality", multi=True),
    "SeriesInstanceUID": Keyword(_SE, "series_instance_uid", multi=True),
    "SeriesNumber": Keyword(_SE, "series_number", _IS, multi=True),
    "SeriesDescription": Keyword(_SE, "series_description", multi=True),
    "BodyPartExamined": Keyword(_SE, "body_part_examined", multi=True),
    "NumberOfSeriesRelatedInstances": Keyword(_SE, "number_of_series_related_instances", _IS,
                                              multi=True),
}


@dataclass(frozen=True, slots=True)
class Glob:
    """A glob (``*``, ``?``) and the regular expression it becomes."""

    text: str
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Regex:
    """A ``re:`` pattern, compiled; matched with ``fullmatch``."""

    text: str
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Range:
    """A ``range:``; ``None`` leaves that end open.

    Bounds are normalized for comparison: dates as given, times widened to
    ``HHMMSS[.F]`` (low) and ``HHMMSS.FFFFFF`` (high), numbers as given.
    """

    text: str
    type: ValueType
    low: str | None
    high: str | None


Pattern = Glob | Regex | Range


@dataclass(frozen=True, slots=True)
class Condition:
    """One parsed condition; ``text`` is its canonical ``KEYWORD=PATTERN`` form."""

    text: str
    keyword: str
    pattern: Pattern
    negated: bool

    @property
    def spec(self) -> Keyword:
        """The keyword's entry in :data:`KEYWORDS`."""
        return KEYWORDS[self.keyword]


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What routing sees of one study: each keyword's values (empty ones left out).

    ``state`` is the study's :class:`~storage.models.StudyState` value; a
    quarantined study is held, whatever its routes say.
    """

    study_instance_uid: str
    state: str
    values: Mapping[str, tuple[str, ...]]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a glob: ``*`` any run, ``?`` one character, rest literal."""
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char)
             for char in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _problem(text: str, rule: str) -> StorageError:
    return StorageError(f"route conditions: {text!r}: {rule}")


def parse_condition(text: str) -> Condition:
    """Parse and check one ``KEYWORD=PATTERN`` condition (see the module notes).

    Parameters
    ----------
    text : str
        The condition; spaces around the keyword are ignored, the pattern is
        taken as written.

    Returns
    -------
    Condition
        With its canonical text ``KEYWORD=PATTERN``.

    Raises
    ------
    StorageError
        When there is no ``=``, the keyword is not in :data:`KEYWORDS` (the
        message lists them), a regular expression does not compile, or a
        range is malformed or not for this keyword's type.
    """
    if not isinstance(text, str) or "=" not in text:
        raise _problem(str(text), "expected KEYWORD=PATTERN")
    name, _, body = text.partition("=")
    keyword = name.strip()
    if keyword not in KEYWORDS:
        raise _problem(text, f"unknown keyword {keyword!r}; expected one of "
                             f"{', '.join(sorted(KEYWORDS))}")
    negated = body.startswith(NEGATION)
    source = body[len(NEGATION):] if negated else body
    pattern: Pattern
    if source.startswith(REGEX_PREFIX):
        pattern = _regex(text, source[len(REGEX_PREFIX):])
    elif source.startswith(RANGE_PREFIX):
        pattern = _range(text, source[len(RANGE_PREFIX):], keyword)
    else:
        pattern = Glob(source, glob_regex(source))
    return Condition(f"{keyword}={body}", keyword, pattern, negated)


def _regex(text: str, expression: str) -> Regex:
    try:
        return Regex(expression, re.compile(expression))
    except re.error as exc:
        raise _problem(text, f"expected a Python regular expression after 're:', got "
                             f"{expression!r} ({exc})") from None
    except (OverflowError, RecursionError):
        raise _problem(text, f"regular expression {expression!r} is too large") from None


def _range(text: str, body: str, keyword: str) -> Range:
    kind = KEYWORDS[keyword].type
    if kind is ValueType.TEXT:
        raise _problem(text, f"a range applies to dates, times and numbers; {keyword} is text "
                             "(use a glob or re:)")
    low, dash, high = body.partition("-")
    if not dash or "-" in high or not (low or high):
        raise _problem(text, f"expected range:LOW-HIGH with at least one end, "
                             f"got {RANGE_PREFIX}{body}")
    if kind is ValueType.DATE:
        low_key, high_key = _date(text, low), _date(text, high)
    elif kind is ValueType.TIME:
        low_key, high_key = _time(text, low, high=False), _time(text, high, high=True)
    else:
        low_key, high_key = _number(text, low), _number(text, high)
    if low_key is not None and high_key is not None and _above(kind, low_key, high_key):
        raise _problem(text, f"expected LOW <= HIGH, got {low!r} above {high!r}")
    return Range(body, kind, low_key, high_key)


def _above(kind: ValueType, low: str, high: str) -> bool:
    if kind is ValueType.NUMBER:
        return Decimal(low) > Decimal(high)
    return low > high


def _date(text: str, value: str) -> str | None:
    if not value:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise _problem(text, f"expected a date YYYYMMDD, got {value!r}") from None
    return value


def _time(text: str, value: str, *, high: bool) -> str | None:
    if not value:
        return None
    try:
        bound = time_high(value) if high else time_low(value)
    except MatchError:
        raise _problem(text, f"expected a time HH[MM[SS[.FFFFFF]]], got {value!r}") from None
    if int(bound[:2]) > 23 or int(bound[2:4]) > 59 or int(bound[4:6]) > 60:
        raise _problem(text, f"expected a time HH[MM[SS[.FFFFFF]]], got {value!r}")
    return bound


def _number(text: str, value: str) -> str | None:
    if not value:
        return None
    if not _NUMBER.fullmatch(value):
        raise _problem(text, f"expected a non-negative number, got {value!r}")
    return value
