"""PS3.4 C.2.2.2 matching: values parsed by kind, and each kind's SQL on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ColumnElement, column
from sqlalchemy.dialects import postgresql, sqlite

from storage.conditions import glob_pattern, like_pattern, match_condition
from storage.matching import (
    AnyOf,
    Empty,
    MatchError,
    Range,
    Single,
    UidList,
    Universal,
    ValueKind,
    Wildcard,
    datetime_high,
    datetime_low,
    fold,
    parse,
    time_high,
    time_low,
)
from storage.models import PeerScope
from storage.search import Level, Query, Scope, compile_query

K = ValueKind


@pytest.mark.parametrize(("values", "kind", "expected"), [
    ([], K.TEXT, Universal()),
    ([""], K.PERSON, Universal()),
    (["*"], K.UID, Universal()),
    (["*"], K.DATE, Universal()),
    (["CT"], K.TEXT, Single("CT")),
    (["  CT "], K.TEXT, Single("CT")),
    (['""'], K.TEXT, Empty()),
    (["Doe*"], K.PERSON, Wildcard("Doe*")),
    (["D?e"], K.TEXT, Wildcard("D?e")),
    (["100%_x"], K.TEXT, Single("100%_x")),
    (["1.2.3"], K.UID, Single("1.2.3")),
    (["1.2.3", "1.2.4", "1.2.3"], K.UID, UidList(("1.2.3", "1.2.4"))),
    (["20240101"], K.DATE, Single("20240101")),
    (["20240101-20240131"], K.DATE, Range("20240101", "20240131")),
    (["20240101-"], K.DATE, Range("20240101", None)),
    (["-20240131"], K.DATE, Range(None, "20240131")),
    (["10"], K.TIME, Range("100000", "105959.999999")),
    (["1030"], K.TIME, Range("103000", "103059.999999")),
    (["103015.250"], K.TIME, Range("103015.25", "103015.250999")),
    (["0930-1200"], K.TIME, Range("093000", "120059.999999")),
    (["-0930"], K.TIME, Range(None, "093059.999999")),
    (["2024"], K.DATETIME, Range("20240101000000", "20241231235959.999999")),
    (["202402151030"], K.DATETIME, Range("20240215103000", "20240215103059.999999")),
    (["20240215103000+0100"], K.DATETIME, Range("20240215103000", "20240215103000.999999")),
    (["20240101-20240131"], K.DATETIME, Range("20240101000000", "20240131235959.999999")),
    (["2024-2025"], K.DATETIME, Range("20240101000000", "20251231235959.999999")),
    (["202401-"], K.DATETIME, Range("20240101000000", None)),
    (["0012"], K.NUMBER, Single("12")),
    (["CT", "MR*"], K.TEXT, AnyOf((Single("CT"), Wildcard("MR*")))),
    (["CT", "*"], K.TEXT, Universal()),
])
def test_parse(values: list[str], kind: ValueKind, expected: object) -> None:
    assert parse(values, kind) == expected


@pytest.mark.parametrize(("values", "kind", "message"), [
    (["1.2.*"], K.UID, "wildcards are not allowed in a UID"),
    (["1.2", ""], K.UID, "empty value in a list of UIDs"),
    (["2024*"], K.DATE, "expected a date YYYYMMDD"),
    (["2024-01-01"], K.DATE, "expected a date YYYYMMDD"),
    (["-"], K.DATE, "at least one end"),
    (["20240101", "20240102"], K.DATE, "one value or one range"),
    (["25:00:00"], K.TIME, "expected a time"),
    (["10-x"], K.TIME, "expected a time"),
    (["2024/01"], K.DATETIME, "expected a date-time"),
    (["1*"], K.NUMBER, "expected an integer"),
])
def test_parse_refuses(values: list[str], kind: ValueKind, message: str) -> None:
    with pytest.raises(MatchError, match=message):
        parse(values, kind)


def test_precision_bounds() -> None:
    assert (time_low("09"), time_high("09")) == ("090000", "095959.999999")
    assert time_low("101500.500000") == "101500.5"
    assert time_low("101500.000") == "101500"
    assert datetime_low("202402") == "20240201000000"
    assert datetime_high("202402") == "20240231235959.999999"  # an upper bound, compared as text
    assert fold("ÉCOLE^Zoë") == "école^zoë"


@pytest.mark.parametrize(("pattern", "like", "glob"), [
    ("Doe*", "Doe%", "Doe*"),
    ("D?e", "D_e", "D?e"),
    ("100%*", "100\\%%", "100%*"),
    ("a_b?", "a\\_b_", "a_b?"),
    ("back\\slash*", "back\\\\slash%", "back\\slash*"),
    ("[x]*", "[x]%", "[[]x]*"),
])
def test_wildcard_translation_escapes(pattern: str, like: str, glob: str) -> None:
    assert like_pattern(pattern) == like
    assert glob_pattern(pattern) == glob


def _sql(condition: ColumnElement[bool] | None, dialect: str) -> str:
    assert condition is not None
    compiler = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[dialect]
    return str(condition.compile(dialect=compiler, compile_kwargs={"literal_binds": True}))


NAME, FOLDED, DATE, TIME, NUMBER = (column("name"), column("name_folded"), column("d"),
                                    column("t"), column("n"))


@pytest.mark.parametrize(("col", "values", "kind", "folded", "dialect", "sql"), [
    (NAME, ["Doe^J"], K.TEXT, None, "sqlite", "name = 'Doe^J'"),
    (NAME, ["Doe^J"], K.PERSON, FOLDED, "sqlite", "name_folded = 'doe^j'"),
    (NAME, ["a%b_c*"], K.TEXT, None, "postgresql", "name LIKE 'a\\%%b\\_c%%' ESCAPE '\\'"),
    (NAME, ["a%b_c*"], K.TEXT, None, "sqlite", "name GLOB 'a%b_c*'"),
    (NAME, ["DOE*"], K.PERSON, FOLDED, "postgresql", "name_folded LIKE 'doe%%' ESCAPE '\\'"),
    (NAME, ['""'], K.TEXT, None, "sqlite", "name = ''"),
    (NUMBER, ['""'], K.NUMBER, None, "sqlite", "n IS NULL"),
    (NUMBER, ["007"], K.NUMBER, None, "sqlite", "n = 7"),
    (NAME, ["1.2", "1.3"], K.UID, None, "sqlite", "name IN ('1.2', '1.3')"),
    (DATE, ["20240101-"], K.DATE, None, "sqlite", "d != '' AND d >= '20240101'"),
    (DATE, ["-20240131"], K.DATE, None, "postgresql", "d != '' AND d <= '20240131'"),
    (NAME, ["CT", "MR"], K.TEXT, None, "sqlite", "name = 'CT' OR name = 'MR'"),
])
def test_match_condition_sql(col: Any, values: list[str], kind: ValueKind, folded: Any,
                             dialect: str, sql: str) -> None:
    assert _sql(match_condition(col, parse(values, kind), kind, dialect, folded), dialect) == sql


def test_time_range_pads_stored_values() -> None:
    sql = _sql(match_condition(TIME, parse(["0930-1200"], K.TIME), K.TIME, "sqlite"), "sqlite")
    assert sql == ("t != '' AND CASE WHEN (length(t) < 6) THEN substr(t || '000000', 1, 6) "
                   "ELSE t END >= '093000' AND CASE WHEN (length(t) < 6) THEN "
                   "substr(t || '000000', 1, 6) ELSE t END <= '120059.999999'")


def test_universal_adds_no_condition() -> None:
    assert match_condition(NAME, parse([], K.TEXT), K.TEXT, "sqlite") is None


def test_compiled_query_joins_down_and_scopes() -> None:
    query = Query(level=Level.SERIES, keys={
        "study_instance_uid": parse(["2.25.1"], K.UID), "modality": parse(["CT"], K.TEXT),
        "modalities_in_study": parse(["MR"], K.TEXT)}, scope=Scope(PeerScope.SENT, "clinic-a"))
    sql = str(compile_query(query, "sqlite").compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "FROM series JOIN study ON series.study_fk = study.id JOIN patient" in sql
    assert "study.state = 'active' AND study.source_peer = 'clinic-a'" in sql
    # the EXISTS uses its own alias of series, not the outer row
    assert "FROM series AS series_1 WHERE series_1.study_fk = study.id" in " ".join(sql.split())
    assert "ORDER BY" not in sql  # no sort before the first row (see storage.search)


def test_keys_below_the_level_are_refused() -> None:
    query = Query(level=Level.STUDY, keys={"modality": parse(["CT"], K.TEXT)},
                  scope=Scope(PeerScope.ALL))
    with pytest.raises(KeyError, match="modality is not a key at the STUDY level"):
        compile_query(query, "sqlite")
