"""The audit trail on SQLite and PostgreSQL: append, filter, UTC times, sinks (I5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from storage import audit
from storage.db import session_scope
from storage.errors import StorageError
from storage.models import AuditOutcome
from storage.records import AuditEvent


def test_records_are_appended_in_order(engine: Engine) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    with session_scope(engine) as session:
        audit.record(session, "association-rejected", "UNKNOWN_AE", "failure",
                     detail="calling AE title not registered")
        audit.record(session, "reidentify", "admin", AuditOutcome.SUCCESS,
                     study_instance_uid="2.25.42")
    with session_scope(engine, readonly=True) as session:
        events = audit.list_events(session)
    assert [(e.event, e.actor, e.outcome, e.study_instance_uid) for e in events] == [
        ("association-rejected", "UNKNOWN_AE", AuditOutcome.FAILURE, None),
        ("reidentify", "admin", AuditOutcome.SUCCESS, "2.25.42"),
    ]
    assert events[0].detail == "calling AE title not registered"
    assert events[0].id < events[1].id
    assert all(e.at.tzinfo is not None and e.at >= before for e in events)


def test_filters_and_limit(engine: Engine) -> None:
    with session_scope(engine) as session:
        for n in range(5):
            audit.record(session, "store" if n % 2 else "delete", f"AE{n}", "success")
    future = datetime.now(UTC) + timedelta(hours=1)
    with session_scope(engine, readonly=True) as session:
        assert [e.actor for e in audit.list_events(session, event="store")] == ["AE1", "AE3"]
        assert [e.actor for e in audit.list_events(session, limit=2)] == ["AE0", "AE1"]
        assert audit.list_events(session, since=future) == []
        with pytest.raises(ValueError, match="timezone-aware"):
            audit.list_events(session, since=datetime(2026, 1, 1))


def test_a_failed_transaction_leaves_no_record(engine: Engine) -> None:
    with pytest.raises(RuntimeError):
        with session_scope(engine) as session:
            audit.record(session, "study-delete", "admin", "success")
            raise RuntimeError("the deletion failed")
    with session_scope(engine, readonly=True) as session:
        assert audit.list_events(session) == []


def test_invalid_records_are_refused(engine: Engine) -> None:
    cases = [
        ("", "admin", "success", "audit event: expected 1-64"),
        ("x" * 65, "admin", "success", "audit event"),
        ("store", "a" * 65, "success", "audit actor"),
        ("store", "admin", "maybe", "audit outcome: expected success or failure, got 'maybe'"),
    ]
    with session_scope(engine) as session:
        for event, actor, outcome, message in cases:
            with pytest.raises(StorageError, match=message):
                audit.record(session, event, actor, outcome)
        assert audit.list_events(session) == []


def test_newest_keeps_the_most_recent_in_order(engine: Engine) -> None:
    with session_scope(engine) as session:
        for n in range(5):
            audit.record(session, "store", f"AE{n}", "success")
    with session_scope(engine, readonly=True) as session:
        assert [e.actor for e in audit.list_events(session, limit=2, newest=True)] == [
            "AE3", "AE4"]


def test_sinks_receive_committed_records_only(engine: Engine) -> None:
    received: list[AuditEvent] = []
    audit.subscribe(engine, received.append)
    try:
        with session_scope(engine) as session:
            audit.record(session, "reidentify", "admin", "success", study_instance_uid="2.25.7")
            audit.record(session, "study-delete", "admin", "success")
            assert received == []  # not before the commit
        with pytest.raises(RuntimeError):
            with session_scope(engine) as session:
                audit.record(session, "study-delete", "admin", "success")
                raise RuntimeError("rolled back")
        with session_scope(engine) as session:  # a later transaction sends only its own
            audit.record(session, "find", "VIEWER", "failure", detail="status=0xA900")
    finally:
        audit.unsubscribe(engine, received.append)
    assert [(e.event, e.actor, e.outcome) for e in received] == [
        ("reidentify", "admin", AuditOutcome.SUCCESS),
        ("study-delete", "admin", AuditOutcome.SUCCESS),
        ("find", "VIEWER", AuditOutcome.FAILURE),
    ]
    assert received[0].study_instance_uid == "2.25.7" and received[0].id > 0
    with session_scope(engine, readonly=True) as session:
        assert [e.id for e in audit.list_events(session)] == [e.id for e in received]


def test_a_failing_sink_never_undoes_the_record(engine: Engine) -> None:
    def broken(_item: AuditEvent) -> None:
        raise OSError("collector away")

    audit.subscribe(engine, broken)
    try:
        with session_scope(engine) as session:
            audit.record(session, "node-start", "GATEWAY", "success")
    finally:
        audit.unsubscribe(engine, broken)
    with session_scope(engine, readonly=True) as session:
        assert [e.event for e in audit.list_events(session)] == ["node-start"]


def test_a_record_written_later_keeps_the_time_of_its_event(engine: Engine) -> None:
    then = datetime(2026, 11, 27, 8, 30, 0, 125000, tzinfo=UTC)
    with session_scope(engine) as session:
        audit.record(session, "association-accepted", "CLINIC", "success", at=then)
        with pytest.raises(StorageError, match="audit at: expected a timezone-aware time"):
            audit.record(session, "find", "VIEWER", "success", at=datetime(2026, 11, 27))
    with session_scope(engine, readonly=True) as session:
        assert [e.at for e in audit.list_events(session)] == [then]


def test_a_rolled_back_savepoint_drops_only_its_own_records(engine: Engine) -> None:
    received: list[AuditEvent] = []
    audit.subscribe(engine, received.append)
    try:
        with session_scope(engine) as session:
            audit.record(session, "store", "CLINIC", "success")
            with pytest.raises(RuntimeError):
                with session.begin_nested():
                    audit.record(session, "store", "INSIDE", "success")
                    raise RuntimeError("the savepoint is undone")
            with session.begin_nested():
                audit.record(session, "store", "KEPT", "success")
    finally:
        audit.unsubscribe(engine, received.append)
    assert [e.actor for e in received] == ["CLINIC", "KEPT"]
    with session_scope(engine, readonly=True) as session:
        assert [e.actor for e in audit.list_events(session)] == ["CLINIC", "KEPT"]
