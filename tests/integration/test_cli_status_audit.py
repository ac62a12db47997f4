"""``dicom-gateway status`` and ``audit list`` through click's CliRunner (SQLite and PostgreSQL).

``status`` is judged against a node started in this process (its listener
answers) or a closed port, with forward jobs planted in the queue;
``audit list`` reads records written the way the node writes them.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import storage.audit as audit
import storage.quarantine as quarantine
from gateway.app import build_app
from gateway.cli import main
from gateway.cli._exit import FAILED, OK, USAGE
from gateway.node import Node
from storage.db import session_scope
from storage.queue_models import ForwardJob, JobKind, JobState
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.interop.conftest import free_port
from tests.tlscerts import make_pki

Invoke = Callable[..., Result]


def _runner(data_dir: Path, db_url: str, **extra: str) -> Invoke:
    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")
        }
        env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                    "DICOM_GATEWAY_STORAGE__DATA_DIR": str(data_dir),
                    "DICOM_GATEWAY_DATABASE__URL": db_url, **extra})
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _job(engine: object, destination: str, state: JobState, created: datetime,
         study: str = "2.25.1") -> None:
    with session_scope(engine) as session:  # type: ignore[arg-type]
        session.add(ForwardJob(study_instance_uid=study, destination=destination,
                               kind=JobKind.INITIAL, state=state, next_attempt_at=created,
                               created_at=created, updated_at=created))


def test_status_of_a_running_node_is_healthy(
    make_node: Callable[..., Node], db_url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    node = make_node()
    now = datetime.now(UTC)
    _job(node.app.engine, "institute-a", JobState.PENDING, now - timedelta(minutes=5))
    _job(node.app.engine, "institute-a", JobState.DONE, now, study="2.25.2")
    _job(node.app.engine, "institute-b", JobState.DONE, now, study="2.25.3")
    gw = _runner(node.app.data_dir, db_url, DICOM_GATEWAY_LISTENER__PORT=str(node.port),
                 DICOM_GATEWAY_STATUS__MIN_FREE_DISK_MB="0")
    result = gw("status", "--json")
    assert result.exit_code == OK, result.output
    data = json.loads(result.stdout)
    assert data["healthy"] is True and data["problems"] == []
    assert data["listeners"] == [{"ae_title": "GATEWAY", "bind": "127.0.0.1",
                                  "port": node.port, "tls": False, "answering": True}]
    assert data["queue"]["by_state"] == {"pending": 1, "sending": 0, "done": 2, "failed": 0,
                                         "cancelled": 0}
    assert data["queue"]["by_destination"]["institute-a"]["pending"] == 1
    assert data["queue"]["by_destination"]["institute-b"]["done"] == 1
    oldest = data["queue"]["oldest_pending"]
    assert oldest["destination"] == "institute-a" and 290 <= oldest["age_seconds"] <= 400
    assert data["spool"] == {"depth": 0, "oldest": None}
    assert data["quarantine"] == {"held": 0, "bytes": 0}
    assert data["disk"]["free_bytes"] > 0 and data["disk"]["data_dir"] == str(node.app.data_dir)

    text = gw("status")
    assert text.exit_code == OK
    assert text.stdout.splitlines()[0] == "status: healthy"
    assert f"listener: GATEWAY 127.0.0.1:{node.port} answering" in text.stdout
    assert "problem:" not in text.stdout


def test_status_is_unhealthy_and_says_why(db_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    settings = node_settings(tmp_path, db_url)
    app = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        old = datetime.now(UTC) - timedelta(days=4)
        _job(app.engine, "institute-a", JobState.PENDING, old)
        _job(app.engine, "institute-b", JobState.FAILED, old, study="2.25.2")
        meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                         received_at=old, peer_address="127.0.0.1")
        for _ in range(3):  # waiting: nothing ingests here
            app.spool.accept_bytes(lambda fh: fh.write(b"\0" * 1000), meta)
        held = app.spool.claim()
        assert held is not None
        app.spool.quarantine(held, "needs review")
        with session_scope(app.engine) as session:
            quarantine.record(session, held.name, "needs review", "CLINIC")
    finally:
        app.close()
    gw = _runner(settings.storage.data_dir, db_url, DICOM_GATEWAY_LISTENER__PORT=str(port),
                 DICOM_GATEWAY_STATUS__MIN_FREE_DISK_MB="1048576",
                 DICOM_GATEWAY_STATUS__MAX_SPOOL_DEPTH="1")
    result = gw("status", "--json")
    assert result.exit_code == FAILED, result.output
    data = json.loads(result.stdout)
    assert data["healthy"] is False
    assert data["listeners"][0]["answering"] is False
    assert data["spool"]["depth"] == 2 and data["spool"]["oldest"] is not None
    assert data["quarantine"]["held"] == 1 and data["quarantine"]["bytes"] >= 1000
    problems = "\n".join(data["problems"])
    assert len(data["problems"]) == 5, problems
    assert "spool: 2 entries waiting, more than status.max_spool_depth=1" in problems
    assert f"listener 127.0.0.1:{port} (GATEWAY) does not accept connections" in problems
    assert "below status.min_free_disk_mb=1048576" in problems
    assert "queue: 1 failed forward jobs, more than status.max_failed_jobs=0" in problems
    assert "to institute-a pending for" in problems
    assert "status.max_pending_age_seconds=259200" in problems

    text = gw("status")
    assert text.exit_code == FAILED
    assert text.stdout.splitlines()[0] == "status: UNHEALTHY"
    assert sum(line.startswith("problem: ") for line in text.stdout.splitlines()) == 5
    assert "quarantine: 1 held" in text.stdout
    assert "NOT ANSWERING" in text.stdout

    relaxed = _runner(settings.storage.data_dir, db_url, DICOM_GATEWAY_LISTENER__PORT=str(port),
                      DICOM_GATEWAY_STATUS__MIN_FREE_DISK_MB="0",
                      DICOM_GATEWAY_STATUS__MAX_FAILED_JOBS="1",
                      DICOM_GATEWAY_STATUS__MAX_PENDING_AGE_SECONDS="0")
    assert json.loads(relaxed("status", "--json").stdout)["problems"] == [
        f"listener 127.0.0.1:{port} (GATEWAY) does not accept connections"]


@pytest.fixture
def trail(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.chdir(tmp_path)
    settings = node_settings(tmp_path, db_url)
    app = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        with session_scope(app.engine) as session:
            audit.record(session, "association-rejected", "STRANGER", "failure",
                         detail="calling AE title not registered address=10.0.0.9")
            audit.record(session, "store", "CLINIC", "success", study_instance_uid="2.25.77",
                         detail="peer=clinic-a instances=12")
            audit.record(session, "reidentify", "admin", "success",
                         study_instance_uid="2.25.77")
    finally:
        app.close()
    return _runner(settings.storage.data_dir, db_url)


def test_audit_list_json_and_filters(trail: Invoke) -> None:
    result = trail("audit", "list", "--json")
    assert result.exit_code == OK, result.output
    rows = json.loads(result.stdout)
    assert [r["event"] for r in rows] == ["association-rejected", "store", "reidentify"]
    assert rows[1] | {"id": 0, "at": ""} == {
        "id": 0, "at": "", "event": "store", "outcome": "success", "actor": "CLINIC",
        "study_instance_uid": "2.25.77", "detail": "peer=clinic-a instances=12",
        "dicom_event_id": "110104", "dicom_event": "DICOM Instances Transferred"}
    assert datetime.fromisoformat(rows[0]["at"]).utcoffset() == timedelta(0)
    assert rows[2]["dicom_event_id"] == "110110"

    def events(*args: str) -> list[str]:
        found = trail("audit", "list", "--json", *args)
        assert found.exit_code == OK, found.output
        return [r["event"] for r in json.loads(found.stdout)]

    assert events("--event", "reidentify") == ["reidentify"]
    assert events("--event", "store", "--event", "reidentify") == ["store", "reidentify"]
    assert events("--limit", "2") == ["store", "reidentify"]
    assert events("--since", "1h") == ["association-rejected", "store", "reidentify"]
    assert events("--since", "2999-01-01") == []
    assert events("--since", "2000-01-01T00:00+02:00", "--event", "store") == ["store"]

    text = trail("audit", "list")
    assert text.exit_code == OK
    header, *lines = text.stdout.splitlines()
    assert header.split() == ["AT", "EVENT", "DICOM", "OUTCOME", "WHO", "STUDY", "DETAIL"]
    assert lines[0].split()[1:5] == ["association-rejected", "110113", "failure", "STRANGER"]


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--limit", "0"]])
def test_audit_list_bad_arguments_exit_2(trail: Invoke, args: list[str]) -> None:
    result = trail("audit", "list", *args)
    assert result.exit_code == USAGE
    assert result.stderr.strip().splitlines() == [f"Error: {args[0]}: expected " + {
        "--since": "an ISO 8601 date or date-time (2026-11-27, 2026-11-27T08:00) or an age "
                   "(30m, 12h, 7d), got 'yesterday'",
        "--limit": "an integer 1-1000000, got '0'"}[args[0]]]


def test_status_probes_the_tls_listener_too(
    make_node: Callable[..., Node], db_url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    node = make_node(**{"tls.enabled": True, "tls.port": tls_port,
                        "tls.certificate": str(pki.server.certificate),
                        "tls.private_key": str(pki.server.private_key)})
    gw = _runner(node.app.data_dir, db_url, DICOM_GATEWAY_LISTENER__PORT=str(node.port),
                 DICOM_GATEWAY_STATUS__MIN_FREE_DISK_MB="0",
                 DICOM_GATEWAY_TLS__ENABLED="true", DICOM_GATEWAY_TLS__PORT=str(tls_port),
                 DICOM_GATEWAY_TLS__CERTIFICATE=str(pki.server.certificate),
                 DICOM_GATEWAY_TLS__PRIVATE_KEY=str(pki.server.private_key))
    result = gw("status", "--json")
    assert result.exit_code == OK, result.output
    assert [(x["port"], x["tls"], x["answering"]) for x in json.loads(result.stdout)["listeners"]
            ] == [(node.port, False, True), (tls_port, True, True)]
    plain_port = node.port
    node.stop()
    down = gw("status", "--json")
    assert down.exit_code == FAILED
    assert json.loads(down.stdout)["problems"] == [
        f"listener 127.0.0.1:{plain_port} (GATEWAY) does not accept connections",
        f"listener 127.0.0.1:{tls_port} (GATEWAY, TLS) does not accept connections"]
