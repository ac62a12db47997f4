"""Audit records as RFC 5424 syslog lines shaped after PS3.15 A.5, sent over UDP (RFC 5426)."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime

import pytest

from gateway.auditlog import AUDIT_CODES, SD_ID, SyslogSink, code_of, format_message, parse_target
from storage.models import AuditOutcome
from storage.records import AuditEvent

#: RFC 5424 section 6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD
_HEADER = re.compile(r"<(?P<pri>[0-9]{1,3})>1 (?P<stamp>\S+) (?P<host>\S+) dicom-gateway "
                     r"(?P<procid>\S+) (?P<msgid>\S+) \[(?P<sd>.*?[^\\])\](?: (?P<msg>.*))?")


def _event(**over: object) -> AuditEvent:
    values: dict[str, object] = {
        "id": 7, "at": datetime(2026, 11, 27, 10, 0, 1, 250000, tzinfo=UTC), "event": "store",
        "actor": "CLINIC", "outcome": AuditOutcome.SUCCESS, "study_instance_uid": "2.25.42",
        "detail": "peer=clinic-a instances=3"}
    values.update(over)
    return AuditEvent(**values)  # type: ignore[arg-type]


def _params(sd: str) -> dict[str, str]:
    return {name: value.replace('\\"', '"').replace("\\]", "]").replace("\\\\", "\\")
            for name, value in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sd)}


def test_a_store_is_instances_transferred_created() -> None:
    line = format_message(_event(), hostname="node-1", source_id="GATEWAY", procid="42").decode()
    found = _HEADER.fullmatch(line)
    assert found, line
    assert int(found["pri"]) == 10 * 8 + 5  # security/authorization, notice
    assert found["stamp"] == "2026-11-27T10:00:01.250000+00:00"
    assert (found["host"], found["procid"], found["msgid"]) == ("node-1", "42", "110104")
    assert found["sd"].startswith(SD_ID + " ")
    assert _params(found["sd"]) == {
        "EventID": "110104", "EventIDDisplay": "DICOM Instances Transferred",
        "EventActionCode": "C", "EventOutcomeIndicator": "0", "UserID": "CLINIC",
        "AuditSourceID": "GATEWAY", "Event": "store", "RecordID": "7",
        "ParticipantObjectID": "2.25.42"}
    assert found["msg"] == "peer=clinic-a instances=3"


@pytest.mark.parametrize(("event", "event_id", "action", "event_type"), [
    ("association-rejected", "110113", "E", "110126"),  # Security Alert, Node Authentication
    ("find", "110112", "E", ""),  # Query
    ("move", "110104", "R", ""),
    ("forward", "110104", "R", ""),
    ("reidentify", "110110", "R", ""),  # Patient Record
    ("study-delete", "110105", "D", ""),  # DICOM Study Deleted
    ("node-start", "110100", "E", "110120"),  # Application Activity, Application Start
    ("something-new", "110113", "E", "110132"),  # Use of Restricted Function
])
def test_events_take_their_ps315_codes(event: str, event_id: str, action: str,
                                       event_type: str) -> None:
    code = code_of(event)
    assert (code.event_id, code.action, code.event_type) == (event_id, action, event_type)


def test_every_code_is_a_dcm_audit_event_id() -> None:
    assert all(code.event_id in {str(n) for n in range(110100, 110115)}
               for code in AUDIT_CODES.values())
    assert all(code.action in "CRUDE" and len(code.action) == 1 for code in AUDIT_CODES.values())


def test_a_failure_is_a_warning_with_outcome_4_and_values_are_escaped() -> None:
    line = format_message(_event(outcome=AuditOutcome.FAILURE, actor='B"A]D\\AE',
                                 study_instance_uid=None, detail="status=0xA900\nnext"),
                          hostname="", source_id="GATEWAY").decode()
    found = _HEADER.fullmatch(line)
    assert found, line
    assert int(found["pri"]) == 10 * 8 + 4
    assert found["host"] == "-" and found["procid"] == "-"
    params = _params(found["sd"])
    assert params["EventOutcomeIndicator"] == "4"
    assert params["UserID"] == 'B"A]D\\AE'
    assert "ParticipantObjectID" not in params
    assert found["msg"] == "status=0xA900?next"  # one line, printable ASCII


@pytest.mark.parametrize("url", ["tcp://h:514", "udp://h", "udp://:514", "udp://h:0",
                                 "udp://h:70000", "udp://h:514/x", "h:514"])
def test_bad_targets_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="expected udp://HOST:PORT"):
        parse_target(url)


def test_the_sink_sends_one_datagram_per_record(collector: socket.socket) -> None:
    sink = SyslogSink(f"udp://127.0.0.1:{collector.getsockname()[1]}", "GATEWAY")
    sink(_event())
    sink(_event(id=8, event="reidentify", actor="admin"))
    first, second = collector.recv(9000).decode(), collector.recv(9000).decode()
    assert 'Event="store"' in first and 'RecordID="7"' in first
    assert 'EventID="110110"' in second and 'UserID="admin"' in second


def test_an_unreachable_collector_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sink = SyslogSink("udp://host.invalid:514", "GATEWAY")
    sink(_event())
    sink(_event(id=8))
    assert [r.getMessage() for r in caplog.records].count(
        "audit syslog to=host.invalid:514 failed reason='gaierror'") == 1
