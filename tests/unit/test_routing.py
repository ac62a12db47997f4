"""Route conditions (storage.rules) and their evaluation (gateway.routing), no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.routing import check_condition, destinations, evaluate, is_held, match_value
from storage.errors import StorageError
from storage.routes import RouteRecord
from storage.rules import KEYWORDS, Glob, Range, Regex, StudyFacts, ValueType, parse_condition

T0 = datetime(2026, 1, 2, tzinfo=UTC)


def facts(state: str = "active", **values: tuple[str, ...] | str) -> StudyFacts:
    given = {name: (value,) if isinstance(value, str) else value
             for name, value in values.items()}
    return StudyFacts(study_instance_uid="2.25.1", state=state,
                      values={name: given.get(name, ()) for name in KEYWORDS})


def route(name: str, *conditions: str, priority: int = 100, enabled: bool = True,
          to: tuple[str, ...] = ("institute-a",)) -> RouteRecord:
    return RouteRecord(name=name, enabled=enabled, priority=priority, destinations=to,
                       conditions=conditions, created_at=T0, updated_at=T0)


CT_STUDY = facts(SendingPeer="clinic-a", CallingAETitle="CLINICA",
                 ModalitiesInStudy=("CT", "SR"), Modality=("CT", "SR"),
                 BodyPartExamined=("ABDOMEN", "CHEST"), StudyDescription="CT Chest w/o",
                 StudyDate="20260315", StudyTime="093012.25", SeriesNumber=("2", "10"),
                 NumberOfStudyRelatedInstances="212")


# -- parsing ---------------------------------------------------------------

@pytest.mark.parametrize("text, kind, negated, canonical", [
    ("Modality=CT", Glob, False, "Modality=CT"),
    (" Modality =CT*", Glob, False, "Modality=CT*"),
    ("SendingPeer=!clinic-b", Glob, True, "SendingPeer=!clinic-b"),
    ("StudyDescription=re:(?i).*chest.*", Regex, False, "StudyDescription=re:(?i).*chest.*"),
    ("StudyDescription=!re:.*test.*", Regex, True, "StudyDescription=!re:.*test.*"),
    ("StudyDate=range:20260101-", Range, False, "StudyDate=range:20260101-"),
    ("StudyDate=!range:-20251231", Range, True, "StudyDate=!range:-20251231"),
    ("StudyDescription=", Glob, False, "StudyDescription="),
])
def test_conditions_parse_to_their_kind(text: str, kind: type, negated: bool,
                                        canonical: str) -> None:
    condition = parse_condition(text)
    assert isinstance(condition.pattern, kind)
    assert condition.negated is negated
    assert condition.text == canonical


def test_ranges_take_their_type_from_the_keyword_and_widen_times() -> None:
    assert parse_condition("StudyDate=range:20260101-20260131").pattern == Range(
        "20260101-20260131", ValueType.DATE, "20260101", "20260131")
    assert parse_condition("StudyTime=range:0930-10").pattern == Range(
        "0930-10", ValueType.TIME, "093000", "105959.999999")
    assert parse_condition("NumberOfStudyRelatedInstances=range:-99.5").pattern == Range(
        "-99.5", ValueType.NUMBER, None, "99.5")


@pytest.mark.parametrize("text, message", [
    ("Modality", "expected KEYWORD=PATTERN"),
    ("PatientsName=DOE*", "unknown keyword 'PatientsName'; expected one of AccessionNumber, "
                          "BodyPartExamined,"),
    ("StudyDescription=re:(unclosed", "expected a Python regular expression after 're:', "
                                      "got '(unclosed'"),
    ("StudyDescription=range:a-b", "a range applies to dates, times and numbers; "
                                   "StudyDescription is text"),
    ("StudyDate=range:2026-", "expected a date YYYYMMDD, got '2026'"),
    ("StudyDate=range:20260230-", "expected a date YYYYMMDD, got '20260230'"),
    ("StudyDate=range:20260101", "expected range:LOW-HIGH with at least one end"),
    ("StudyDate=range:-", "expected range:LOW-HIGH with at least one end"),
    ("StudyDate=range:20260201-20260101", "expected LOW <= HIGH, got '20260201' above "
                                          "'20260101'"),
    ("StudyTime=range:25-", "expected a time HH[MM[SS[.FFFFFF]]], got '25'"),
    ("SeriesNumber=range:x-3", "expected a non-negative number, got 'x'"),
    ("SeriesNumber=range:10-9", "expected LOW <= HIGH"),
])
def test_bad_conditions_name_the_condition_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(StorageError) as caught:
        parse_condition(text)
    assert str(caught.value).startswith(f"route conditions: {text!r}: ")
    assert message in str(caught.value)


def test_unknown_keyword_lists_every_known_one() -> None:
    with pytest.raises(StorageError) as caught:
        parse_condition("Nope=1")
    for keyword in ("SendingPeer", "CallingAETitle", "ModalitiesInStudy", "BodyPartExamined",
                    "StudyDescription", "ReferringPhysicianName", "PatientSex", "SeriesNumber"):
        assert keyword in str(caught.value)


# -- matching one value ----------------------------------------------------

@pytest.mark.parametrize("text, value, expected", [
    ("StudyDescription=CT*", "CT Chest", True),
    ("StudyDescription=ct*", "CT Chest", False),  # globs are case-sensitive
    ("StudyDescription=CT?Chest", "CT Chest", True),
    ("StudyDescription=CT?Chest", "CT  Chest", False),
    ("StudyDescription=CT", "CT Chest", False),  # the whole value
    ("StudyDescription=a[b]c.d", "a[b]c.d", True),  # everything else is literal
    ("StudyDescription=a[b]c.d", "abc.d", False),
    ("StudyDescription=re:CT.*", "CT Chest", True),
    ("StudyDescription=re:Chest", "CT Chest", False),  # fullmatch, not search
    ("StudyDescription=re:(?i)ct chest", "CT Chest", True),
    ("StudyDate=range:20260101-", "20260315", True),
    ("StudyDate=range:20260101-", "20251231", False),
    ("StudyDate=range:-20260101", "20260101", True),
    ("StudyDate=range:20260101-20260131", "20260201", False),
    ("StudyDate=range:20260101-", "2026", False),
    ("StudyTime=range:0930-0931", "093012.25", True),
    ("StudyTime=range:0930-0931", "0931", True),
    ("StudyTime=range:0930-0931", "0932", False),
    ("StudyTime=range:-09", "095959.9", True),
    ("SeriesNumber=range:2-10", "10", True),
    ("SeriesNumber=range:2-10", "11", False),
    ("NumberOfStudyRelatedInstances=range:100-", "212", True),
    ("NumberOfStudyRelatedInstances=range:0.5-1.5", "1", True),
])
def test_one_value_against_a_pattern(text: str, value: str, expected: bool) -> None:
    assert match_value(parse_condition(text), value)[0] is expected


def test_a_value_of_the_wrong_type_is_outside_a_range_and_says_so() -> None:
    assert match_value(parse_condition("SeriesNumber=range:1-"), "n/a") == (
        False, "'n/a' is not a number")


# -- conditions on a study -------------------------------------------------

@pytest.mark.parametrize("text, matched", [
    ("ModalitiesInStudy=CT", True),  # any value
    ("ModalitiesInStudy=MR", False),
    ("ModalitiesInStudy=!MR", True),  # negated: no value matches
    ("ModalitiesInStudy=!CT", False),
    ("Modality=S?", True),
    ("BodyPartExamined=!re:HEAD|NECK", True),
    ("BodyPartExamined=CHEST", True),
    ("SendingPeer=clinic-a", True),
    ("SendingPeer=!clinic-a", False),
    ("CallingAETitle=CLINIC*", True),
    ("SeriesNumber=range:5-", True),
    ("ReferringPhysicianName=*", False),  # no value: nothing matches ...
    ("ReferringPhysicianName=!*", True),  # ... and a negation does
    ("StudyDate=range:20260101-", True),
    ("StudyDate=!range:20260101-", False),
])
def test_conditions_on_a_study(text: str, matched: bool) -> None:
    assert check_condition(text, CT_STUDY).matched is matched


def test_a_condition_explains_the_values_it_saw() -> None:
    hit = check_condition("ModalitiesInStudy=CT", CT_STUDY)
    assert (hit.keyword, hit.values, hit.reason) == (
        "ModalitiesInStudy", ("CT", "SR"), "'CT' matches glob 'CT'")
    miss = check_condition("ModalitiesInStudy=MR", CT_STUDY)
    assert miss.reason == "no value matches glob 'MR'"
    negated = check_condition("ModalitiesInStudy=!CT", CT_STUDY)
    assert negated.reason == "'CT' matches glob 'CT', and it is negated"
    empty = check_condition("ReferringPhysicianName=!*", CT_STUDY)
    assert (empty.values, empty.reason) == ((), "no ReferringPhysicianName value, as negated "
                                                 "wants")
    ranged = check_condition("StudyDate=range:20260101-", CT_STUDY)
    assert ranged.reason == "'20260315' matches range 20260101-"
    wrong = check_condition("SeriesNumber=range:1-", facts(SeriesNumber=("x",)))
    assert wrong.reason == "no value matches range 1- ('x' is not a number)"


# -- routes ----------------------------------------------------------------

def test_routes_are_evaluated_by_priority_then_name_and_all_conditions_must_match() -> None:
    decisions = evaluate([
        route("zeta", "ModalitiesInStudy=CT", priority=5, to=("institute-b",)),
        route("alpha", "ModalitiesInStudy=CT", "SendingPeer=clinic-b", priority=5),
        route("first", priority=1, to=("institute-c",)),
        route("ct-a", "ModalitiesInStudy=CT", "SendingPeer=clinic-a", priority=10,
              to=("institute-a", "institute-b")),
    ], CT_STUDY)
    assert [(d.route, d.matched) for d in decisions] == [
        ("first", True), ("alpha", False), ("zeta", True), ("ct-a", True)]
    assert decisions[0].reason == "no conditions: matches every study"
    assert decisions[1].reason == "SendingPeer=clinic-b: no value matches glob 'clinic-b'"
    assert [c.matched for c in decisions[1].conditions] == [True, False]
    assert decisions[3].reason == "all 2 conditions match"
    # every matching route contributes; each destination once, in route order
    assert destinations(decisions) == ("institute-c", "institute-b", "institute-a")


def test_a_disabled_route_is_explained_and_contributes_nothing() -> None:
    decisions = evaluate([route("off", "ModalitiesInStudy=CT", enabled=False)], CT_STUDY)
    assert decisions[0].matched is False
    assert decisions[0].reason == "disabled (would match: all 1 conditions match)"
    assert destinations(decisions) == ()


def test_a_quarantined_study_is_held() -> None:
    assert is_held(facts(state="quarantined")) and not is_held(CT_STUDY)
