"""The crash loop's judgement of repeats at the sink (tests/crashloop.py, RELIABILITY T26).

A second copy of an instance is allowed only as a repeat of what was in
flight at a kill: a kill must lie between the two copies, and one kill
explains at most the forwarder's commit window. Anything else is a double
forward, and the loop must say so.
"""

from __future__ import annotations

from tests.crashloop import IN_FLIGHT, LoopResult, count_repeats


def test_a_copy_after_a_kill_is_a_repeat_and_no_violation() -> None:
    result = LoopResult()
    count_repeats(result, [("1.2.3", 100), ("1.2.4", 110), ("1.2.3", 300)], kills=[200])
    assert (result.resent_after_kill, result.most_resent_per_kill) == (1, 1)
    assert result.duplicates == 0 and not result.violations


def test_two_copies_from_one_life_are_a_duplicate() -> None:
    result = LoopResult()
    count_repeats(result, [("1.2.3", 100), ("1.2.3", 150)], kills=[200])
    assert result.duplicates == 1 and result.resent_after_kill == 0
    assert result.violations == ["instance 1.2.3 reached the sink twice from one life"]


def test_more_repeats_after_one_kill_than_its_window_is_a_violation() -> None:
    uids = [f"1.2.{n}" for n in range(IN_FLIGHT + 1)]
    received = [(uid, 100 + n) for n, uid in enumerate(uids)]
    received += [(uid, 500 + n) for n, uid in enumerate(uids)]
    result = LoopResult()
    count_repeats(result, received, kills=[300])
    assert result.resent_after_kill == IN_FLIGHT + 1
    assert len(result.violations) == 1 and "more than the" in result.violations[0]
