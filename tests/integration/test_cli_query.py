"""``peer add/update --scope`` and ``study list`` with C-FIND's filters (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.cli._exit import NOT_FOUND, OK, USAGE
from storage.audit import list_events
from storage.db import make_engine, session_scope
from tests.conftest import TEST_KEY_HEX
from tests.query_index import STUDIES, StudyRow, add_peer, modalities, populate

Invoke = Callable[..., Result]


@pytest.fixture
def gw(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """``dicom-gateway`` on a migrated database holding the generated index."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")}
        env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                    "DICOM_GATEWAY_STORAGE__DATA_DIR": str(tmp_path / "var"),
                    "DICOM_GATEWAY_DATABASE__URL": db_url})
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert invoke("db", "upgrade").exit_code == OK
    engine = make_engine(db_url)
    try:
        populate(engine)
        add_peer(engine, "clinic-a", "CLINICA", ("source", "query"))
        yield invoke
    finally:
        engine.dispose()


def _listed(gw: Invoke, *options: str) -> list[str]:
    result = gw("study", "list", "--json", *options)
    assert result.exit_code == OK, result.stderr
    return sorted(item["study_instance_uid"] for item in json.loads(result.stdout))


def _studies(predicate: Callable[[StudyRow], bool]) -> list[str]:
    return sorted(study.uid for study in STUDIES if predicate(study))


@pytest.mark.parametrize(("options", "expected"), [
    ((), lambda s: True),
    (("--patient", "doe*"), lambda s: s.patient.patient_name.lower().startswith("doe")),
    (("--patient", "PID-0003"), lambda s: s.patient.patient_id == "PID-0003"),
    (("--patient", "pid-0003"), lambda s: False),  # an ID is text: case counts
    (("--date", "20240101-20240131"), lambda s: "20240101" <= s.date <= "20240131"),
    (("--date", "-20231231"), lambda s: s.date != "" and s.date <= "20231231"),
    (("--modality", "MR"), lambda s: "MR" in modalities(s)),
    (("--modality", "SR", "--modality", "MR"), lambda s: bool({"SR", "MR"} & modalities(s))),
    (("--description", "CT*"), lambda s: s.description.startswith("CT")),
    (("--description", "*100%"), lambda s: s.description.endswith("100%")),
    (("--sender", "clinic-b"), lambda s: s.sender == "clinic-b"),
    (("--peer", "clinic-a"), lambda s: s.sender == "clinic-a"),
    (("--peer", "clinic-a", "--modality", "CT", "--date", "20240101-"),
     lambda s: s.sender == "clinic-a" and "CT" in modalities(s) and s.date >= "20240101"),
])
def test_study_list_filters_as_c_find_does(gw: Invoke, options: tuple[str, ...],
                                           expected: Callable[[StudyRow], bool]) -> None:
    assert _listed(gw, *options) == _studies(expected)


def test_study_list_text_and_limit(gw: Invoke) -> None:
    text = gw("study", "list", "--modality", "SR")
    assert text.exit_code == OK
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 3 and "SENDER" in lines[0]
    limited = gw("study", "list", "--json", "--limit", "2")
    assert [item["study_instance_uid"] for item in json.loads(limited.stdout)] == [
        STUDIES[-1].uid, STUDIES[-2].uid]  # newest first


@pytest.mark.parametrize(("options", "message"), [
    (("--date", "2024"), "--date: expected a date YYYYMMDD"),
    (("--date", "-"), "--date: expected a range with at least one end"),
    (("--limit", "0"), "--limit"),
])
def test_study_list_bad_filters_exit_2(gw: Invoke, options: tuple[str, ...],
                                       message: str) -> None:
    result = gw("study", "list", *options)
    assert result.exit_code == USAGE
    assert message in result.stderr


def test_study_list_for_an_unknown_peer_exit_3(gw: Invoke) -> None:
    assert gw("study", "list", "--peer", "nobody").exit_code == NOT_FOUND


def test_peer_scope_add_update_list(gw: Invoke, db_url: str) -> None:
    added = gw("peer", "add", "institute", "--ae-title", "INSTITUTE", "--host", "127.0.0.1",
               "--port", "104", "--role", "query", "--scope", "routed")
    assert added.exit_code == OK, added.stderr
    assert "scope routed" in added.stdout
    shown = json.loads(gw("peer", "show", "clinic-a", "--json").stdout)
    assert shown["scope"] == "sent"  # the default
    updated = gw("peer", "update", "clinic-a", "--scope", "all", "--role", "query",
                 "--pin-address", "127.0.0.1")
    assert updated.exit_code == OK, updated.stderr
    shown = json.loads(gw("peer", "show", "clinic-a", "--json").stdout)
    assert (shown["scope"], shown["roles"], shown["pinned_address"]) == (
        "all", ["query"], "127.0.0.1")
    assert _listed(gw, "--peer", "clinic-a") == _studies(lambda s: True)
    assert _listed(gw, "--peer", "institute") == []  # nothing is routed yet
    unpinned = gw("peer", "update", "clinic-a", "--unpin")
    assert unpinned.exit_code == OK
    assert json.loads(gw("peer", "show", "clinic-a", "--json").stdout)["pinned_address"] is None
    listed = gw("peer", "list")
    assert "SCOPE" in listed.stdout and "routed" in listed.stdout
    engine = make_engine(db_url)
    try:
        with session_scope(engine, readonly=True) as session:
            events = list_events(session, event="peer-update")
    finally:
        engine.dispose()
    assert [e.detail for e in events] == ["peer clinic-a: pinned_address, roles, scope",
                                          "peer clinic-a: pinned_address"]


@pytest.mark.parametrize(("argv", "code", "message"), [
    (("peer", "update", "clinic-a"), USAGE, "nothing to change"),
    (("peer", "update", "clinic-a", "--scope", "mine"), USAGE, "--scope"),
    (("peer", "update", "clinic-a", "--port", "0"), USAGE, "--port: expected"),
    (("peer", "update", "clinic-a", "--ae-title", "A" * 17), USAGE, "--ae-title: expected"),
    (("peer", "update", "clinic-a", "--pin-address", "1.2.3.4", "--unpin"), USAGE, "--unpin"),
    (("peer", "update", "nobody", "--scope", "all"), NOT_FOUND, "peer 'nobody' not found"),
    (("peer", "add", "x", "--ae-title", "X", "--host", "h", "--port", "1", "--role", "query",
      "--scope", "everything"), USAGE, "--scope"),
])
def test_peer_scope_refusals(gw: Invoke, argv: tuple[str, ...], code: int,
                             message: str) -> None:
    result = gw(*argv)
    assert result.exit_code == code
    assert message in result.stderr
