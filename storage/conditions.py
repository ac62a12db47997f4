"""The SQL condition for one matching key (PS3.4 C.2.2.2), on SQLite and PostgreSQL.

:func:`match_condition` translates each :data:`storage.matching.Match`:

- single value: ``=``; for person names on the folded column with the
  folded value (:func:`storage.matching.fold`), which makes PN matching
  case-insensitive; numbers (IS) compare as integers;
- empty value: ``= ''`` (``IS NULL`` for numbers);
- wildcard: ``LIKE`` on PostgreSQL (case-sensitive there), ``*`` -> ``%``,
  ``?`` -> ``_``, and a literal ``%``, ``_`` or ``\\`` escaped with ``\\``
  (:func:`like_pattern`); ``GLOB`` on SQLite, whose ``LIKE`` ignores case:
  ``*`` and ``?`` are GLOB's own, a literal ``[`` becomes ``[[]``
  (:func:`glob_pattern`). Both use an index on a prefix (PostgreSQL: one
  with ``text_pattern_ops``);
- range: ``>=`` and ``<=`` on the stored text, entities with an empty
  value excluded. DA compares as stored (``YYYYMMDD``); TM through the
  stored value padded to ``HHMMSS`` (:func:`time_of`: ``0930`` is
  09:30:00, an empty time is midnight), against bounds already widened to
  their precision by :mod:`storage.matching`;
- list of UIDs: ``IN``;
- several values: ``OR`` of each.

Nothing is filtered in Python: every match becomes part of the ``WHERE``.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, case, func, or_

from .matching import (
    AnyOf,
    Empty,
    Match,
    Single,
    UidList,
    Universal,
    ValueKind,
    Wildcard,
    fold,
)

__all__ = ["ESCAPE", "glob_pattern", "like_pattern", "match_condition", "range_condition",
           "time_of"]

#: The escape character of LIKE patterns.
ESCAPE: Final = "\\"


def like_pattern(pattern: str) -> str:
    """A PS3.4 C.2.2.2.3 wildcard as a LIKE pattern escaped with ``\\``."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in ("%", "_", ESCAPE):
            out.append(ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def glob_pattern(pattern: str) -> str:
    """A PS3.4 C.2.2.2.3 wildcard as an SQLite GLOB pattern (case-sensitive)."""
    return "".join("[[]" if char == "[" else char for char in pattern)


def _wildcard(column: SQLColumnExpression[Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        return column.op("GLOB", is_comparison=True)(glob_pattern(pattern))
    return column.like(like_pattern(pattern), escape=ESCAPE)


def time_of(column: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """A stored TM as ``HHMMSS[.F]``: shorter values padded with zeros (empty -> midnight)."""
    return case((func.length(column) < 6, func.substr(column.concat("000000"), 1, 6)),
                else_=column)


def range_condition(expression: SQLColumnExpression[Any], stored: SQLColumnExpression[Any],
           low: str | None, high: str | None) -> ColumnElement[bool]:
    parts = [stored != ""]
    if low is not None:
        parts.append(expression >= low)
    if high is not None:
        parts.append(expression <= high)
    return and_(*parts)


def match_condition(column: SQLColumnExpression[Any], match: Match, kind: ValueKind,
                    dialect: str, folded: SQLColumnExpression[Any] | None = None,
                    ) -> ColumnElement[bool] | None:
    """The SQL condition for one key (see the module notes); ``None`` when universal.

    Parameters
    ----------
    column : ColumnElement
        The stored value.
    match : Match
        From :func:`storage.matching.parse` for ``kind``.
    kind : ValueKind
        The key's kind.
    dialect : str
        ``"sqlite"`` or ``"postgresql"``.
    folded : ColumnElement, optional
        For person names: the folded column, matched instead of ``column``.
    """
    if isinstance(match, Universal):
        return None
    if isinstance(match, AnyOf):
        parts = [match_condition(column, part, kind, dialect, folded) for part in match.matches]
        if any(part is None for part in parts):
            return None
        return or_(*[part for part in parts if part is not None])
    if isinstance(match, UidList):
        return column.in_(match.uids)
    if isinstance(match, Empty):
        return column.is_(None) if kind is ValueKind.NUMBER else column == ""
    person = kind is ValueKind.PERSON
    target = folded if person and folded is not None else column
    if isinstance(match, Single):
        if kind is ValueKind.NUMBER:
            return column == int(match.value)
        return target == (fold(match.value) if person else match.value)
    if isinstance(match, Wildcard):
        return _wildcard(target, fold(match.pattern) if person else match.pattern, dialect)
    if kind is ValueKind.TIME:
        return range_condition(time_of(column), column, match.low, match.high)
    if kind in (ValueKind.DATE, ValueKind.DATETIME):
        return range_condition(column, column, match.low, match.high)
    raise ValueError(f"a range does not apply to {kind.value} values")
