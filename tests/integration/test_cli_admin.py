"""The administration commands (db, peer, study, ingest) through click's CliRunner.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture). Peers
are C-ECHOed and studies received through a node started in this process.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

import storage.audit as audit
from gateway.app import build_app
from gateway.cli import main
from gateway.cli._exit import FAILED, NOT_FOUND, OK, UNREACHABLE, USAGE
from gateway.node import Node
from storage.db import session_scope
from storage.schema import head
from storage.spool import SpoolMeta
from storage.studies import list_studies
from tests.conftest import TEST_KEY_HEX, node_settings, wait_until
from tests.corpus import PATIENT_A, make_clinic_study

Invoke = Callable[..., Result]


def _runner(data_dir: Path, db_url: str) -> Invoke:
    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")
        }
        env.update({
            "DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
            "DICOM_GATEWAY_STORAGE__DATA_DIR": str(data_dir),
            "DICOM_GATEWAY_DATABASE__URL": db_url,
        })
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def gw(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``dicom-gateway`` on a private data folder and the test database."""
    monkeypatch.chdir(tmp_path)
    return _runner(tmp_path / "var", db_url)


def _one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# -- db ---------------------------------------------------------------------

def test_db_current_fails_before_upgrade_and_passes_after(gw: Invoke) -> None:
    before = gw("db", "current")
    assert before.exit_code == FAILED
    assert "db upgrade" in _one_error_line(before)

    upgraded = gw("db", "upgrade")
    assert upgraded.exit_code == OK, upgraded.stderr
    assert head() in upgraded.stdout

    after = gw("db", "current")
    assert after.exit_code == OK, after.stderr
    assert after.stdout.strip() == upgraded.stdout.strip()


# -- peer -------------------------------------------------------------------

def _add(gw: Invoke, slug: str = "pacs-a", *extra: str, port: str = "11112") -> Result:
    return gw("peer", "add", slug, "--ae-title", "PACSA", "--host", "127.0.0.1",
              "--port", port, "--role", "source", *extra)


def test_peer_add_list_show_remove(gw: Invoke) -> None:
    added = _add(gw, "pacs-a", "--role", "destination", "--pin-address", "127.0.0.1")
    assert added.exit_code == OK, added.stderr
    assert _add(gw, "modality-b", port="104").exit_code == OK

    listed = gw("peer", "list", "--json")
    assert listed.exit_code == OK
    peers = json.loads(listed.stdout)
    assert [p["slug"] for p in peers] == ["modality-b", "pacs-a"]
    assert peers[1]["roles"] == ["source", "destination"]
    assert peers[1]["pinned_address"] == "127.0.0.1"
    assert peers[1]["port"] == 11112

    text = gw("peer", "list")
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["SLUG", "AE", "TITLE", "HOST", "PORT", "ROLES", "SCOPE",
                                "PINNED"]
    assert lines[1].index("PACSA") == lines[0].index("AE TITLE")  # aligned columns

    shown = gw("peer", "show", "pacs-a", "--json")
    assert shown.exit_code == OK
    assert json.loads(shown.stdout)["ae_title"] == "PACSA"

    removed = gw("peer", "remove", "pacs-a")
    assert removed.exit_code == OK, removed.stderr
    assert [p["slug"] for p in json.loads(gw("peer", "list", "--json").stdout)] == ["modality-b"]
    assert gw("peer", "show", "pacs-a").exit_code == NOT_FOUND


def test_peer_remove_is_audited(gw: Invoke, tmp_path: Path, db_url: str) -> None:
    assert _add(gw).exit_code == OK
    assert gw("peer", "remove", "pacs-a").exit_code == OK
    app = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        with session_scope(app.engine, readonly=True) as session:
            events = audit.list_events(session, event="peer-remove")
    finally:
        app.close()
    assert len(events) == 1 and events[0].detail == "peer pacs-a"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--port", "70000"), "--port"),
        (("--port", "ten"), "--port"),
        (("--role", "sender"), "--role"),
        (("--pin-address", "not-an-ip"), "--pin-address"),
        (("--ae-title", "A" * 17), "--ae-title"),
    ],
)
def test_peer_add_bad_values_exit_2_naming_the_option(
    gw: Invoke, args: tuple[str, str], option: str
) -> None:
    values = {"--ae-title": "PACSA", "--host": "127.0.0.1", "--port": "11112",
              "--role": "source"}
    values[args[0]] = args[1]
    argv = [item for pair in values.items() for item in pair]
    if args[0] == "--pin-address":
        argv += list(args)
    result = gw("peer", "add", "pacs-a", *argv)
    assert result.exit_code == USAGE
    line = _one_error_line(result)
    assert line.startswith(f"Error: {option}: expected"), line
    assert gw("peer", "list", "--json").stdout.strip() == "[]"


def test_peer_forwarding_options_add_update_show_and_back_to_the_defaults(gw: Invoke) -> None:
    added = _add(gw, "institute", "--role", "destination", "--max-associations", "3",
                 "--max-attempts", "2", "--transfer-syntax", "uncompressed")
    assert added.exit_code == OK, added.stderr
    shown = json.loads(gw("peer", "show", "institute", "--json").stdout)
    assert {key: shown[key] for key in ("max_associations", "max_attempts",
                                        "first_delay_seconds", "backoff_multiplier",
                                        "max_delay_seconds", "transfer_syntax")} == {
        "max_associations": 3, "max_attempts": 2, "first_delay_seconds": None,
        "backoff_multiplier": None, "max_delay_seconds": None,
        "transfer_syntax": "uncompressed"}
    updated = gw("peer", "update", "institute", "--first-delay", "5", "--backoff-multiplier",
                 "3", "--max-delay", "120", "--transfer-syntax", "stored")
    assert updated.exit_code == OK, updated.stderr
    listed = json.loads(gw("peer", "list", "--json").stdout)[0]
    assert (listed["max_attempts"], listed["first_delay_seconds"], listed["backoff_multiplier"],
            listed["max_delay_seconds"], listed["transfer_syntax"]) == (2, 5, 3, 120, "stored")
    text = gw("peer", "show", "institute").stdout
    assert "max_attempts:" in text and "first_delay_seconds: 5" in " ".join(text.split())

    both = gw("peer", "update", "institute", "--retry-default", "--max-attempts", "4")
    assert both.exit_code == USAGE
    assert _one_error_line(both).startswith("Error: --retry-default and --max-attempts")
    back = gw("peer", "update", "institute", "--retry-default")
    assert back.exit_code == OK, back.stderr
    shown = json.loads(gw("peer", "show", "institute", "--json").stdout)
    assert [shown[key] for key in ("max_attempts", "first_delay_seconds", "backoff_multiplier",
                                   "max_delay_seconds")] == [None, None, None, None]
    assert shown["max_associations"] == 3
    text = gw("peer", "show", "institute").stdout
    assert "10 ([forward] default)" in text  # max_attempts of the embedded default


@pytest.mark.parametrize(
    ("args", "option", "expected"),
    [
        (("--max-associations", "0"), "--max-associations", "an integer 1-64, got '0'"),
        (("--max-associations", "many"), "--max-associations", "an integer 1-64"),
        (("--max-attempts", "1001"), "--max-attempts", "an integer 1-1000, got '1001'"),
        (("--first-delay", "-1"), "--first-delay", "an integer 1-86400"),
        (("--backoff-multiplier", "1.5"), "--backoff-multiplier", "an integer 1-10"),
        (("--max-delay", ""), "--max-delay", "an integer 1-604800"),
        (("--transfer-syntax", "jpeg"), "--transfer-syntax",
         "one of stored, uncompressed, got 'jpeg'"),
    ],
)
def test_peer_forwarding_options_bad_values_exit_2_naming_the_option(
    gw: Invoke, args: tuple[str, str], option: str, expected: str
) -> None:
    added = _add(gw, "institute", *args)
    assert added.exit_code == USAGE
    assert _one_error_line(added).startswith(f"Error: {option}: expected {expected}")
    assert gw("peer", "list", "--json").stdout.strip() == "[]"
    assert _add(gw, "institute").exit_code == OK
    changed = gw("peer", "update", "institute", *args)
    assert changed.exit_code == USAGE
    assert _one_error_line(changed).startswith(f"Error: {option}: expected {expected}")


def test_peer_add_duplicate_exit_2(gw: Invoke) -> None:
    assert _add(gw).exit_code == OK
    again = _add(gw, port="104")
    assert again.exit_code == USAGE
    assert "already exists" in _one_error_line(again)
    assert json.loads(gw("peer", "show", "pacs-a", "--json").stdout)["port"] == 11112


@pytest.mark.parametrize("command", ["show", "remove", "echo"])
def test_unknown_peer_exit_3(gw: Invoke, command: str) -> None:
    result = gw("peer", command, "nobody")
    assert result.exit_code == NOT_FOUND
    assert "'nobody' not found" in _one_error_line(result)


def test_peer_echo_reaches_a_running_node(gw: Invoke, make_node: Callable[..., Node]) -> None:
    node = make_node()
    title = node.app.settings.node.ae_title
    added = gw("peer", "add", "self", "--ae-title", title, "--host", "127.0.0.1",
               "--port", str(node.port), "--role", "destination")
    assert added.exit_code == OK, added.stderr
    result = gw("peer", "echo", "self")
    assert result.exit_code == OK, result.stderr
    assert "0x0000" in result.stdout


def test_peer_echo_to_a_closed_port_exit_4(gw: Invoke) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _add(gw, "gone", port=str(port)).exit_code == OK
    result = gw("peer", "echo", "gone")
    assert result.exit_code == UNREACHABLE
    assert "cannot be reached" in result.stderr
    assert result.stdout == ""


# -- study ------------------------------------------------------------------

def _received(make_node: Callable[..., Node], tmp_path: Path, count: int) -> Node:
    node = make_node()
    study = make_clinic_study(tmp_path / "study", series=1, per_series=count, jpeg=False)
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.app.settings.node.ae_title)
    assert assoc.is_established
    statuses = [assoc.send_c_store(dcmread(path)).Status for path in study.files.values()]
    assoc.release()
    assert statuses == [0x0000] * count

    def indexed() -> bool:
        with session_scope(node.app.engine, readonly=True) as session:
            found = list_studies(session)
        return len(found) == 1 and found[0].number_of_study_related_instances == count

    wait_until(indexed, what=f"{count} instances indexed")
    return node


def test_study_list_show_reidentify_delete(
    make_node: Callable[..., Node], tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    node = _received(make_node, tmp_path, 2)
    gw = _runner(node.app.data_dir, db_url)

    listed = gw("study", "list", "--json")
    assert listed.exit_code == OK, listed.stderr
    (item,) = json.loads(listed.stdout)
    uid = item["study_instance_uid"]
    assert item["number_of_study_related_instances"] == 2
    assert item["number_of_study_related_series"] == 1
    assert item["modalities_in_study"] == ["CT"]
    assert item["calling_ae_title"] == "CLINIC"
    assert item["state"] == "active"
    assert PATIENT_A.patient_id not in listed.stdout  # pseudonymized values only
    assert item["patient_id"] != PATIENT_A.patient_id

    text = gw("study", "list")
    assert text.exit_code == OK and uid in text.stdout
    assert PATIENT_A.patient_id not in text.stdout
    assert json.loads(gw("study", "list", "--json", "--quarantined").stdout) == []

    shown = gw("study", "show", uid, "--json")
    assert shown.exit_code == OK
    detail = json.loads(shown.stdout)
    assert detail["study_instance_uid"] == uid
    assert len(detail["series"]) == 1 and detail["series"][0][
        "number_of_series_related_instances"] == 2
    assert PATIENT_A.patient_id not in shown.stdout

    again = gw("study", "reidentify", uid)
    assert again.exit_code == OK, again.stderr
    assert PATIENT_A.patient_id in again.stdout
    assert PATIENT_A.issuer in again.stdout
    with session_scope(node.app.engine, readonly=True) as session:
        events = audit.list_events(session, event="reidentify")
    assert [(e.study_instance_uid, e.outcome.value) for e in events] == [(uid, "success")]
    assert events[0].actor

    files_before = list((node.app.data_dir / "store").rglob("*.dcm"))
    assert len(files_before) == 2
    deleted = gw("study", "delete", uid)
    assert deleted.exit_code == OK, deleted.stderr
    assert list((node.app.data_dir / "store").rglob("*.dcm")) == []
    assert json.loads(gw("study", "list", "--json").stdout) == []
    with session_scope(node.app.engine, readonly=True) as session:
        assert len(audit.list_events(session, event="study-delete")) == 1

    # the pseudonym map outlives the index rows, so only a never-seen UID is unknown to it
    for command, target in (("show", uid), ("delete", uid), ("reidentify", "2.25.1")):
        missing = gw("study", command, target)
        assert missing.exit_code == NOT_FOUND, command
        assert "not found" in _one_error_line(missing)
        assert PATIENT_A.patient_id not in missing.stdout + missing.stderr


def test_study_quarantine_lists_nothing_as_an_empty_document(gw: Invoke) -> None:
    result = gw("study", "quarantine", "--json")
    assert result.exit_code == OK
    assert json.loads(result.stdout) == []


# -- ingest -----------------------------------------------------------------

def test_ingest_run_once_drains_the_spool(tmp_path: Path, db_url: str) -> None:
    settings = node_settings(tmp_path, db_url)
    app = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        study = make_clinic_study(tmp_path / "study", series=1, per_series=1, jpeg=False)
        garbage = tmp_path / "garbage.dcm"
        garbage.write_bytes(b"not a DICOM file at all")
        meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY",
                         source_peer=None, received_at=datetime.now(UTC),
                         peer_address="127.0.0.1")
        for path in [*study.files.values(), garbage]:
            app.spool.accept(path, meta)
        assert app.spool.depth() == 2
    finally:
        app.close()

    gw = _runner(settings.storage.data_dir, db_url)
    result = gw("ingest", "run", "--once", "--json")
    assert result.exit_code == OK, result.stderr
    counts = json.loads(result.stdout)
    assert counts["stored"] == 1 and counts["quarantined"] == 1
    assert counts["total"] == 2 and counts["spool_depth"] == 0
    assert len(json.loads(gw("study", "list", "--json").stdout)) == 1

    held = json.loads(gw("study", "quarantine", "--json").stdout)
    assert len(held) == 1 and held[0]["calling_ae_title"] == "CLINIC" and held[0]["reason"]

    idle = gw("ingest", "run", "--once")
    assert idle.exit_code == OK
    assert "total:" in idle.stdout and json.dumps(0) in idle.stdout
    assert gw("ingest", "run").exit_code == USAGE
