"""Storage Commitment requests and results in the database (storage.commitments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete

import storage.commitments as commitments
from storage.db import session_scope
from storage.queue_models import ForwardJob, JobKind, JobState

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ASKED = ["2.25.1", "2.25.2", "2.25.3"]


@pytest.fixture
def job_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        job = ForwardJob(study_instance_uid="2.25.9", destination="institute",
                         kind=JobKind.INITIAL, state=JobState.SENDING, priority=0, attempts=1,
                         next_attempt_at=NOW, last_error="", confirmed_by="", created_at=NOW,
                         updated_at=NOW)
        session.add(job)
        session.flush()
        return job.id


def test_a_result_counts_only_what_was_asked_and_what_it_left_out_is_not_committed(
    engine: Engine, job_id: int
) -> None:
    with session_scope(engine) as session:
        asked = commitments.request(session, "2.25.100", job_id, "institute", ASKED, NOW)
    assert (asked.requested_uids, asked.answered_at, asked.committed) == (tuple(ASKED), None, None)

    with session_scope(engine) as session:
        # 2.25.3 is in neither sequence; 2.25.77 was never asked about
        answered = commitments.answer(session, "2.25.100", "institute", 2,
                                      ["2.25.1", "2.25.77"], {"2.25.2": 0x0112},
                                      NOW + timedelta(seconds=2))
    assert answered is not None
    assert (answered.event_type, answered.committed, answered.failed) == (2, 1, 2)
    assert dict(answered.failures) == {"2.25.2": 0x0112, "2.25.3": None}

    with session_scope(engine, readonly=True) as session:
        found = commitments.get(session, "2.25.100")
        assert found == answered and found.answered_at == NOW + timedelta(seconds=2)
        assert commitments.list_for_job(session, job_id) == [answered]


def test_an_unknown_transaction_is_not_recorded(engine: Engine, job_id: int) -> None:
    with session_scope(engine) as session:
        assert commitments.answer(session, "2.25.404", "institute", 1, ASKED, {}, NOW) is None
        assert commitments.get(session, "2.25.404") is None


def test_requests_go_with_their_job(engine: Engine, job_id: int) -> None:
    with session_scope(engine) as session:
        commitments.request(session, "2.25.100", job_id, "institute", ASKED, NOW)
    with session_scope(engine) as session:
        session.execute(delete(ForwardJob).where(ForwardJob.id == job_id))
    with session_scope(engine, readonly=True) as session:
        assert commitments.get(session, "2.25.100") is None
