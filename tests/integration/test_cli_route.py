"""``dicom-gateway route`` through click's CliRunner, on SQLite and PostgreSQL.

``route test`` runs on a study received the way a clinic's would be: its
files accepted into the spool and ingested (gateway.ingest.run_once), so the
conditions see real index rows.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
from click.testing import CliRunner, Result

import gateway.ingest as ingest
import storage.audit as audit
from gateway.app import build_app
from gateway.cli import main
from gateway.cli._exit import FAILED, NOT_FOUND, OK, USAGE
from storage.db import make_engine, session_scope
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import make_clinic_study

Invoke = Callable[..., Result]


@pytest.fixture
def gw(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``dicom-gateway`` on a migrated database with two destinations and a source."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")}
        env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                    "DICOM_GATEWAY_STORAGE__DATA_DIR": str(tmp_path / "var"),
                    "DICOM_GATEWAY_DATABASE__URL": db_url})
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert invoke("db", "upgrade").exit_code == OK
    for slug, role in (("institute-a", "destination"), ("institute-b", "destination"),
                       ("clinic-a", "source")):
        added = invoke("peer", "add", slug, "--ae-title", slug.upper(), "--host", "127.0.0.1",
                       "--port", "104", "--role", role)
        assert added.exit_code == OK, added.stderr
    return invoke


def _ok(result: Result) -> Result:
    assert result.exit_code == OK, result.stderr
    return result


def _one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def _names(gw: Invoke) -> list[str]:
    return [route["name"] for route in json.loads(_ok(gw("route", "list", "--json")).stdout)]


def test_add_list_show_enable_disable_remove(gw: Invoke, db_url: str) -> None:
    added = _ok(gw("route", "add", "ct-a", "--to", "institute-a,institute-b", "--when",
                   "ModalitiesInStudy=CT", "--when", "SendingPeer=!clinic-b", "--priority", "5"))
    assert added.stdout.strip() == (
        "route ct-a added (enabled, priority 5, to institute-a,institute-b, when "
        "ModalitiesInStudy=CT AND SendingPeer=!clinic-b)")
    _ok(gw("route", "add", "all-b", "--to", "institute-b", "--disabled"))
    assert _names(gw) == ["ct-a", "all-b"]  # priority 5 before the default 100

    shown = json.loads(_ok(gw("route", "show", "ct-a", "--json")).stdout)
    assert {key: shown[key] for key in ("name", "enabled", "priority", "destinations",
                                        "conditions")} == {
        "name": "ct-a", "enabled": True, "priority": 5,
        "destinations": ["institute-a", "institute-b"],
        "conditions": ["ModalitiesInStudy=CT", "SendingPeer=!clinic-b"]}
    assert datetime.fromisoformat(shown["created_at"]).tzinfo is not None
    text = _ok(gw("route", "show", "all-b")).stdout
    assert "enabled:      False" in text and "(none: every study)" in text
    table = _ok(gw("route", "list")).stdout.splitlines()
    assert table[0].split() == ["PRIORITY", "NAME", "ENABLED", "DESTINATIONS", "CONDITIONS"]
    assert table[1].split()[:4] == ["5", "ct-a", "yes", "institute-a,institute-b"]

    assert _ok(gw("route", "disable", "ct-a")).stdout.strip() == "route ct-a disabled"
    assert _ok(gw("route", "disable", "ct-a")).stdout.strip() == "route ct-a is already disabled"
    assert _ok(gw("route", "enable", "all-b")).stdout.strip() == "route all-b enabled"
    listed = json.loads(_ok(gw("route", "list", "--json")).stdout)
    assert [(r["name"], r["enabled"]) for r in listed] == [("ct-a", False), ("all-b", True)]
    assert _ok(gw("route", "remove", "ct-a")).stdout.strip() == "route ct-a removed"
    assert _names(gw) == ["all-b"]

    engine = make_engine(db_url)
    try:
        with session_scope(engine, readonly=True) as session:
            events = [(e.event, e.actor, e.detail) for e in audit.list_events(session)
                      if e.event.startswith("route-")]
    finally:
        engine.dispose()
    me = getpass.getuser()
    assert events == [("route-add", me, "route ct-a"), ("route-add", me, "route all-b"),
                      ("route-disable", me, "route ct-a"), ("route-enable", me, "route all-b"),
                      ("route-remove", me, "route ct-a")]


@pytest.mark.parametrize("argv, message", [
    (("add", "Bad_Name", "--to", "institute-a"), "Error: NAME: expected 1-63 characters a-z, "
                                                 "0-9 and '-'"),
    (("add", "r", "--to", "institute-a", "--priority", "soon"),
     "Error: --priority: expected an integer, got 'soon'"),
    (("add", "r", "--to", "institute-z"),
     "Error: --to: expected a registered peer, got 'institute-z'; see: dicom-gateway peer list"),
    (("add", "r", "--to", "clinic-a"),
     "Error: --to: expected a peer with the destination role, got 'clinic-a' (roles source)"),
    (("add", "r", "--to", "institute-a,"), "Error: --to: expected peer slugs separated by "
                                           "commas, got 'institute-a,'"),
    (("add", "r", "--to", "institute-a", "--when", "Colour=red"),
     "Error: --when: 'Colour=red': unknown keyword 'Colour'; expected one of AccessionNumber,"),
    (("add", "r", "--to", "institute-a", "--when", "StudyDescription=re:(x"),
     "Error: --when: 'StudyDescription=re:(x': expected a Python regular expression"),
    (("add", "r", "--to", "institute-a", "--when", "StudyDate=range:2026-"),
     "Error: --when: 'StudyDate=range:2026-': expected a date YYYYMMDD, got '2026'"),
    (("add", "r", "--to", "institute-a", "--when", "Modality"),
     "Error: --when: 'Modality': expected KEYWORD=PATTERN"),
])
def test_bad_arguments_exit_2_with_one_line(gw: Invoke, argv: tuple[str, ...],
                                            message: str) -> None:
    result = gw("route", *argv)
    assert result.exit_code == USAGE
    assert _one_error_line(result).startswith(message)
    assert _names(gw) == []


@pytest.mark.parametrize("argv", [("show", "nope"), ("enable", "nope"), ("disable", "nope"),
                                  ("remove", "nope"), ("test", "2.25.404")])
def test_unknown_routes_and_studies_exit_3(gw: Invoke, argv: tuple[str, ...]) -> None:
    result = gw("route", *argv)
    assert result.exit_code == NOT_FOUND
    assert "not found" in _one_error_line(result)


def test_a_routed_peer_cannot_be_removed(gw: Invoke) -> None:
    _ok(gw("route", "add", "to-a", "--to", "institute-a"))
    result = gw("peer", "remove", "institute-a")
    assert result.exit_code == FAILED
    assert "is a destination of route to-a" in _one_error_line(result)
    dropped = gw("peer", "update", "institute-a", "--role", "query")
    assert dropped.exit_code == USAGE
    assert _one_error_line(dropped).startswith("Error: --role: expected destination among them")


def test_export_then_import_round_trips(gw: Invoke, tmp_path: Path) -> None:
    _ok(gw("route", "add", "ct-a", "--to", "institute-b,institute-a", "--priority", "-3",
           "--when", 'StudyDescription=re:"CT\\s+.*"', "--when", "StudyDate=range:20260101-"))
    _ok(gw("route", "add", "off", "--to", "institute-a", "--disabled"))
    exported = _ok(gw("route", "export")).stdout
    assert 'conditions = ["StudyDescription=re:\\"CT\\\\s+.*\\"", ' in exported
    _ok(gw("route", "export", "routes.toml"))
    assert (tmp_path / "routes.toml").read_text(encoding="utf-8") == exported

    again = _ok(gw("route", "import", "routes.toml"))
    assert again.stdout == ""
    assert "0 added, 0 changed, 0 removed, 2 unchanged" in again.stderr
    for name in ("ct-a", "off"):
        _ok(gw("route", "remove", name))
    imported = _ok(gw("route", "import", "routes.toml"))
    assert imported.stdout.splitlines() == ["added ct-a", "added off"]
    assert _ok(gw("route", "export")).stdout == exported


def test_import_replace_reports_what_changed(gw: Invoke, tmp_path: Path) -> None:
    for name in ("keep", "edit", "gone"):
        _ok(gw("route", "add", name, "--to", "institute-a"))
    (tmp_path / "new.toml").write_text(
        '[[route]]\nname = "keep"\ndestinations = ["institute-a"]\n\n'
        '[[route]]\nname = "edit"\npriority = 1\ndestinations = ["institute-b"]\n'
        'conditions = ["Modality=CT"]\n\n'
        '[[route]]\nname = "new"\nenabled = false\ndestinations = ["institute-a"]\n',
        encoding="utf-8")
    result = _ok(gw("route", "import", "new.toml", "--replace"))
    assert result.stdout.splitlines() == [
        "added new", "changed edit (priority, destinations, conditions)", "removed gone"]
    assert "new.toml: 1 added, 1 changed, 1 removed, 1 unchanged" in result.stderr
    assert _names(gw) == ["edit", "keep", "new"]


@pytest.mark.parametrize("content, message", [
    ("[[route]\n", "Error: bad.toml: expected TOML"),
    ('[[route]]\nname = "r"\n', "Error: bad.toml: route #1 (r): destinations: expected a list "
                                "of peer slugs, got nothing"),
    ('[[route]]\nname = "r"\ndestinations = ["institute-a"]\ncolour = "red"\n',
     "Error: bad.toml: route #1 (r): unknown key colour"),
    ('[[route]]\nname = "r"\npriority = "1"\ndestinations = ["institute-a"]\n',
     "Error: bad.toml: route #1 (r): priority: expected an integer, got '1'"),
    ('[[route]]\nname = "ok"\ndestinations = ["institute-a"]\n\n'
     '[[route]]\nname = "r"\ndestinations = ["clinic-a"]\n',
     "Error: bad.toml: route r: destinations: expected a peer with the destination role"),
])
def test_a_bad_file_exits_2_and_changes_nothing(gw: Invoke, tmp_path: Path, content: str,
                                                message: str) -> None:
    (tmp_path / "bad.toml").write_text(content, encoding="utf-8")
    result = gw("route", "import", "bad.toml", "--replace")
    assert result.exit_code == USAGE
    assert _one_error_line(result).startswith(message)
    assert _names(gw) == []


def test_import_of_a_missing_file_exits_2(gw: Invoke) -> None:
    result = gw("route", "import", "missing.toml")
    assert result.exit_code == USAGE
    assert _one_error_line(result).startswith("Error: FILE: cannot read missing.toml")


def _ingest_clinic_study(tmp_path: Path, db_url: str) -> None:
    """A CT study from clinic-a (two series), through the spool and ingest."""
    study = make_clinic_study(tmp_path / "study", series=2, per_series=2, jpeg=False)
    meta = SpoolMeta(calling_ae_title="CLINICA", called_ae_title="GATEWAY",
                     source_peer="clinic-a", received_at=datetime.now(UTC),
                     peer_address="127.0.0.1")
    app = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        for path in study.files.values():
            def write(handle: BinaryIO, path: Path = path) -> None:
                handle.write(path.read_bytes())
            app.spool.accept_bytes(write, meta)
        assert ingest.run_once(app).stored == 4
    finally:
        app.close()


def test_route_test_explains_a_match_and_a_miss(gw: Invoke, tmp_path: Path, db_url: str) -> None:
    _ingest_clinic_study(tmp_path, db_url)
    studies = json.loads(_ok(gw("study", "list", "--json")).stdout)
    assert len(studies) == 1
    uid = studies[0]["study_instance_uid"]
    _ok(gw("route", "add", "ct-from-a", "--to", "institute-a", "--priority", "10",
           "--when", "SendingPeer=clinic-a", "--when", "ModalitiesInStudy=CT",
           "--when", "BodyPartExamined=!re:HEAD|NECK"))
    _ok(gw("route", "add", "mr-only", "--to", "institute-b", "--priority", "20",
           "--when", "CallingAETitle=CLINIC*", "--when", "ModalitiesInStudy=MR"))

    report = json.loads(_ok(gw("route", "test", uid, "--json")).stdout)
    assert report["study_instance_uid"] == uid and report["held"] is False
    assert report["destinations"] == ["institute-a"]
    hit, miss = report["routes"]
    assert (hit["route"], hit["matched"], hit["reason"]) == (
        "ct-from-a", True, "all 3 conditions match")
    assert [(c["condition"], c["values"], c["matched"]) for c in hit["conditions"]] == [
        ("SendingPeer=clinic-a", ["clinic-a"], True),
        ("ModalitiesInStudy=CT", ["CT"], True),
        ("BodyPartExamined=!re:HEAD|NECK", ["CHEST"], True)]
    assert (miss["route"], miss["matched"]) == ("mr-only", False)
    assert miss["reason"] == "ModalitiesInStudy=MR: no value matches glob 'MR'"
    assert [c["matched"] for c in miss["conditions"]] == [True, False]

    lines = _ok(gw("route", "test", uid)).stdout.splitlines()
    assert lines == [
        f"study {uid}: 1 of 2 routes match; routed to institute-a",
        "route ct-from-a (priority 10): MATCH -> institute-a: all 3 conditions match",
        "  [yes] SendingPeer=clinic-a: values clinic-a; 'clinic-a' matches glob 'clinic-a'",
        "  [yes] ModalitiesInStudy=CT: values CT; 'CT' matches glob 'CT'",
        "  [yes] BodyPartExamined=!re:HEAD|NECK: values CHEST; no value matches "
        "re:HEAD|NECK, as negated wants",
        "route mr-only (priority 20): no match: ModalitiesInStudy=MR: no value matches "
        "glob 'MR'",
        "  [yes] CallingAETitle=CLINIC*: values CLINICA; 'CLINICA' matches glob 'CLINIC*'",
        "  [no] ModalitiesInStudy=MR: values CT; no value matches glob 'MR'",
    ]
