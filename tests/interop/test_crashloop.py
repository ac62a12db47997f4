"""T26: kill -9 of the served node at random moments while storescu sends, 10 times.

RELIABILITY I1 and T26, durability contract 1-3: after every restart the
spool is replayed and the forward queue resumed; at the end every instance
the node answered Success is indexed and reached the destination, none is
queued to it twice, and none was sent twice by one life of the node (a
kill may leave the last few delivered instances unrecorded: those are sent
again after the restart, and the loop checks they stay within that
window). The loop and its checks are tests/crashloop.py, which
``scripts/bench crashloop`` runs with 200 kills. The kills may also be aimed
(tests/crashpoint.py): the node kills itself at a chosen step of the
durability contract, after a write, after the fsync, after the commit, after
a delivery, each in turn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crashloop import run_crashloop
from tests.crashpoint import STEPS

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_kill_9_at_random_moments_loses_no_acknowledged_instance_and_doubles_none(
    db_url: str, tmp_path: Path
) -> None:
    result = run_crashloop(tmp_path / "loop", kills=10, seed=26, database_url=db_url)
    report = "\n".join(result.lines())
    assert not result.violations, report
    assert result.kills == 10, report
    assert result.acknowledged >= 30, f"the senders hardly got through: {report}"
    assert result.acknowledged_indexed == result.acknowledged, report
    assert result.forwarded == result.indexed >= result.acknowledged, report
    assert result.duplicates == 0, report


def test_kill_9_under_four_senders_over_several_receiving_processes_loses_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """Issue line: kill -9 during a four-sender load loses no acknowledged instance, with
    the connections spread over two receiving processes (gateway.receivers), which die
    with the node and whose partial receives the restart sweeps."""
    result = run_crashloop(tmp_path / "loop", kills=5, seed=7, database_url=db_url, senders=4,
                           environment={"DICOM_GATEWAY_LISTENER__PROCESSES": "2"})
    report = "\n".join(result.lines())
    assert not result.violations, report
    assert result.kills == 5, report
    assert result.acknowledged >= 40, f"the senders hardly got through: {report}"
    assert result.acknowledged_indexed == result.acknowledged, report
    assert result.duplicates == 0, report


def test_kill_9_at_each_step_of_the_durability_contract_loses_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """T26's named moments: a received dataset written but not fsync'd, fsync'd but not
    answered, its ingest committed but its spool entry not released, an instance
    delivered but its outcome not recorded; twice each, the node killing its whole
    process group there. Each step is reached, and I1 holds at the end."""
    result = run_crashloop(tmp_path / "loop", kills=2 * len(STEPS), seed=30,
                           database_url=db_url, points=STEPS, max_delay=30, pause=1.0)
    report = "\n".join(result.lines())
    assert not result.violations, report
    assert sorted(result.aimed) == sorted(STEPS), f"a step was never reached: {report}"
    assert result.acknowledged_indexed == result.acknowledged > 0, report
    assert result.forwarded == result.indexed >= result.acknowledged, report
    assert result.duplicates == 0, report
