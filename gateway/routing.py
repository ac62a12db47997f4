"""Routing rules: which routes a study matches, which destinations it goes to, and why.

ARCHITECTURE.md, routing and forwarding. :func:`evaluate` is pure: it takes
the routes (:class:`storage.routes.RouteRecord`) and a study's facts
(:class:`storage.rules.StudyFacts`, read by :func:`load_facts`) and returns
one :class:`RouteDecision` per route, in evaluation order (ascending
priority, then name), each with a :class:`ConditionResult` per condition:
the values seen, whether it matched, and why. The grammar of conditions is
:mod:`storage.rules` (globs, ``re:``, ``range:``, ``!``), checked when a
route is added.

- All conditions of a route must match (AND); a route without conditions
  matches every study.
- A multi-valued keyword (ModalitiesInStudy, and the series' Modality,
  BodyPartExamined, ...) matches when any value matches; negated, when no
  value matches. An empty value is no value.
- Every enabled matching route contributes its destinations
  (:func:`destinations`): one study may go to several institutes. A
  disabled route is reported, its conditions explained, and contributes
  nothing.

Changing routes never re-sends what was delivered: routes are read when a
study is routed, and the forward queue keys its jobs by study and
destination.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy.orm import Session

from storage.matching import MatchError, time_low
from storage.models import StudyState
from storage.routes import RouteRecord, study_facts
from storage.rules import Condition, Glob, Range, Regex, StudyFacts, ValueType, parse_condition

__all__ = [
    "ConditionResult",
    "RouteDecision",
    "check_condition",
    "destinations",
    "evaluate",
    "is_held",
    "load_facts",
    "match_value",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionResult:
    """One condition against one study: the values seen, the outcome, the reason."""

    condition: str
    keyword: str
    values: tuple[str, ...]
    matched: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    """One route against one study.

    ``matched`` is true when the route is enabled and every condition
    matched; then ``destinations`` receive the study.
    """

    route: str
    priority: int
    enabled: bool
    matched: bool
    destinations: tuple[str, ...]
    conditions: tuple[ConditionResult, ...]
    reason: str


def _describe(condition: Condition) -> str:
    pattern = condition.pattern
    if isinstance(pattern, Regex):
        return f"re:{pattern.text}"
    if isinstance(pattern, Range):
        return f"range {_bound(pattern.low)}-{_bound(pattern.high)}"
    return f"glob {pattern.text!r}"


def _bound(value: str | None) -> str:
    return "" if value is None else value


def match_value(condition: Condition, value: str) -> tuple[bool, str]:
    """Whether one value matches the condition's pattern (negation not applied).

    Globs and ``re:`` patterns match the whole value, case-sensitively.
    A range compares dates as ``YYYYMMDD``, times widened to ``HHMMSS``
    (PS3.4 C.2.2.2.5, so ``0930`` is 09:30:00) and numbers by value; a
    value that is not of the range's type is outside it.

    Parameters
    ----------
    condition : Condition
        From :func:`storage.rules.parse_condition`.
    value : str
        One non-empty value of the condition's keyword.

    Returns
    -------
    tuple[bool, str]
        The outcome and, when false because the value has the wrong form,
        why (otherwise an empty string).
    """
    pattern = condition.pattern
    if isinstance(pattern, Glob | Regex):
        return pattern.regex.fullmatch(value) is not None, ""
    key = _range_key(pattern.type, value)
    if key is None:
        return False, f"{value!r} is not a {pattern.type.value}"
    if pattern.type is ValueType.NUMBER:
        number = Decimal(key)
        return ((pattern.low is None or number >= Decimal(pattern.low))
                and (pattern.high is None or number <= Decimal(pattern.high))), ""
    return ((pattern.low is None or key >= pattern.low)
            and (pattern.high is None or key <= pattern.high)), ""


def _range_key(kind: ValueType, value: str) -> str | None:
    if kind is ValueType.DATE:
        return value if len(value) == 8 and value.isdigit() else None
    if kind is ValueType.TIME:
        try:
            return time_low(value)
        except MatchError:
            return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return value if number.is_finite() else None


def check_condition(condition: Condition | str, facts: StudyFacts) -> ConditionResult:
    """Evaluate one condition on a study's facts, with the reason.

    A condition matches when any of the keyword's values matches its
    pattern; a negated (``!``) one when none does. With no value at all,
    a condition does not match and a negated one does.

    Parameters
    ----------
    condition : Condition | str
        Parsed, or ``KEYWORD=PATTERN`` text (parsed here).
    facts : StudyFacts
        The study's values.

    Returns
    -------
    ConditionResult

    Raises
    ------
    storage.errors.StorageError
        When ``condition`` is text that does not parse.
    """
    parsed = parse_condition(condition) if isinstance(condition, str) else condition
    values = tuple(facts.values.get(parsed.keyword, ()))
    what = _describe(parsed)
    hits: list[str] = []
    notes: list[str] = []
    for value in values:
        matched, note = match_value(parsed, value)
        if matched:
            hits.append(value)
        elif note:
            notes.append(note)
    if not values:
        found, why = False, f"no {parsed.keyword} value"
    elif hits:
        found, why = True, f"{_quoted(hits)} {'matches' if len(hits) == 1 else 'match'} {what}"
    else:
        found = False
        why = f"no value matches {what}" + (f" ({'; '.join(notes)})" if notes else "")
    if parsed.negated:
        matched = not found
        why = f"{why}, and it is negated" if found else f"{why}, as negated wants"
    else:
        matched = found
    return ConditionResult(condition=parsed.text, keyword=parsed.keyword, values=values,
                           matched=matched, reason=why)


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(repr(value) for value in values)


def evaluate(routes: Sequence[RouteRecord], facts: StudyFacts) -> list[RouteDecision]:
    """Evaluate every route on one study, in order, explaining each outcome.

    Parameters
    ----------
    routes : Sequence[RouteRecord]
        The routes, in any order; they are evaluated and returned in
        ascending priority, then by name. Disabled routes are explained but
        never match.
    facts : StudyFacts
        The study's values (:func:`load_facts`).

    Returns
    -------
    list[RouteDecision]
        One per route. A route matches when it is enabled and all its
        conditions match (AND); the first failing condition is its reason.
        Every condition is evaluated, so each explains itself.

    Raises
    ------
    storage.errors.StorageError
        When a stored condition no longer parses (never for routes that
        :mod:`storage.routes` wrote).
    """
    decisions = []
    for route in sorted(routes, key=lambda r: (r.priority, r.name)):
        results = tuple(check_condition(text, facts) for text in route.conditions)
        failed = [result for result in results if not result.matched]
        if not route.conditions:
            reason = "no conditions: matches every study"
        elif failed:
            reason = f"{failed[0].condition}: {failed[0].reason}"
        else:
            reason = f"all {len(results)} conditions match"
        matched = route.enabled and not failed
        if not route.enabled:
            reason = f"disabled ({'would match' if not failed else 'would not match'}: {reason})"
        decisions.append(RouteDecision(
            route=route.name, priority=route.priority, enabled=route.enabled, matched=matched,
            destinations=route.destinations, conditions=results, reason=reason))
    return decisions


def destinations(decisions: Iterable[RouteDecision]) -> tuple[str, ...]:
    """The destination peers of the matching routes, each once, in route order."""
    found: dict[str, None] = {}
    for decision in decisions:
        if decision.matched:
            found.update(dict.fromkeys(decision.destinations))
    return tuple(found)


def load_facts(session: Session, study_instance_uid: str) -> StudyFacts | None:
    """A study's facts from the index, by its (remapped) StudyInstanceUID.

    Two queries: the study with its patient, then its series
    (:func:`storage.routes.study_facts`). ``None`` when the index has no
    such study. A quarantined study's facts say so (``state``); it is held
    whatever its routes say (ARCHITECTURE.md, privacy model).
    """
    return study_facts(session, study_instance_uid)


def is_held(facts: StudyFacts) -> bool:
    """Whether the study is quarantined, so not forwarded until it is released."""
    return facts.state == StudyState.QUARANTINED.value
