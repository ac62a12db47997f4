"""``dicom-gateway case``: list, show (the whole trip), close, return-to; errors exit 2 or 3."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

import storage.cases as cases
import storage.jobs as jobs
import storage.peers as peers
from gateway.app import build_app
from gateway.cli import main
from gateway.ingest import run_once
from storage.db import session_scope
from storage.models import Study
from storage.records import PeerRecord
from storage.spool import SpoolMeta
from tests.conftest import TEST_KEY_HEX, node_settings
from tests.corpus import PATIENT_A, make_clinic_study

Invoke = Callable[..., Result]


@pytest.fixture
def gw(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")}
        env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                    "DICOM_GATEWAY_STORAGE__DATA_DIR": str(tmp_path / "var"),
                    "DICOM_GATEWAY_DATABASE__URL": db_url})
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def case_id(tmp_path: Path, db_url: str) -> int:
    """A clinic's study, indexed and queued to an institute with its own pseudonym space."""
    app = build_app(node_settings(tmp_path, db_url), {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    try:
        with session_scope(app.engine) as session:
            peers.add(session, PeerRecord(slug="clinic", ae_title="CLINIC", host="127.0.0.1",
                                          port=104, roles=("source", "destination")))
            peers.add(session, PeerRecord(slug="institute-a", ae_title="INSTA",
                                          host="127.0.0.1", port=105,
                                          roles=("destination", "results"), pseudonyms="own"))
        study = make_clinic_study(tmp_path / "study", series=1, per_series=2, jpeg=False)
        meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY",
                         source_peer="clinic", received_at=datetime.now(UTC),
                         peer_address="127.0.0.1")
        for path in study.files.values():
            copy = tmp_path / "spooled" / path.name
            copy.parent.mkdir(exist_ok=True)
            shutil.copy(path, copy)
            app.spool.accept(copy, meta)
        assert run_once(app).stored == 2
        with session_scope(app.engine) as session:
            uid = str(session.scalars(select(Study.study_instance_uid)).one())
            job = jobs.enqueue(session, uid, "institute-a", datetime.now(UTC))
            assert job is not None
            [case] = cases.list_cases(session)
        return case.id
    finally:
        app.close()


def test_case_list_and_show_tell_the_trip(gw: Invoke, case_id: int) -> None:
    listed = gw("case", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [case] = json.loads(listed.stdout)
    assert (case["id"], case["state"], case["clinic"], case["institute"], case["pseudonyms"],
            case["instances"]) == (case_id, "sent", "clinic", "institute-a", "own", 2)

    shown = gw("case", "show", str(case_id), "--json")
    assert shown.exit_code == 0, shown.output
    trip = json.loads(shown.stdout)
    # the UID the institute holds for the study: re-keyed, computed by the node
    assert trip["institute_study_instance_uid"] not in (None, case["study_instance_uid"])
    assert [(j["kind"], j["destination"], j["state"]) for j in trip["jobs"]] == [
        ("initial", "institute-a", "pending")]
    assert trip["results"] == []
    assert PATIENT_A.patient_id not in shown.stdout and PATIENT_A.family not in shown.stdout

    text = gw("case", "show", str(case_id))
    assert text.exit_code == 0 and "institute-a" in text.stdout and "initial" in text.stdout
    table = gw("case", "list")
    assert table.exit_code == 0 and table.stdout.splitlines()[1].split()[:4] == [
        str(case_id), "sent", "clinic", "institute-a"]


def test_case_close_and_return_to_are_audited(gw: Invoke, case_id: int) -> None:
    assert gw("case", "return-to", str(case_id), "clinic").exit_code == 0
    closed = gw("case", "close", str(case_id))
    assert closed.exit_code == 0 and f"case {case_id} closed" in closed.stdout
    trip = json.loads(gw("case", "show", str(case_id), "--json").stdout)
    assert (trip["state"], trip["return_to"]) == ("closed", "clinic")
    assert {"case-close", "case-return-to"} <= {event["event"] for event in trip["audit"]}
    again = gw("case", "close", str(case_id))
    assert again.exit_code == 1 and "already closed" in again.stderr
    assert gw("case", "list", "--state", "sent", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "code", "message"), [
    (("case", "show", "99999"), 3, "case 99999: not found"),
    (("case", "close", "x1"), 2, "ID: expected a case number"),
    (("case", "return-to", "CASE", "nobody"), 3, "no peer 'nobody'"),
    (("case", "return-to", "CASE", "institute-a"), 2, "has no destination role"),
])
def test_case_errors_exit_with_one_line(gw: Invoke, case_id: int, args: tuple[str, ...],
                                        code: int, message: str) -> None:
    if args[-1] == "institute-a":
        with_role = gw("peer", "update", "institute-a", "--role", "results")
        assert with_role.exit_code == 0, with_role.output
    result = gw(*[str(case_id) if arg == "CASE" else arg for arg in args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
