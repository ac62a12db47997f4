"""``dicom-gateway import``: bad files are reported, not spooled; --as-peer names the sender."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from sqlalchemy import select

from storage.db import make_engine, session_scope
from storage.models import AuditEntry, Instance
from tests.corpus import make_clinic_study, make_valid_study


def _rows(url: str, model: type) -> list:  # type: ignore[type-arg]
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return list(session.scalars(select(model)))
    finally:
        engine.dispose()


def test_bad_files_are_refused_with_the_rule_and_good_ones_imported(
    cli: Callable[..., Result], tmp_path: Path, db_url: str
) -> None:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=3, jpeg=False)
    folder = tmp_path / "usb"
    (folder / "nested" / "deeper").mkdir(parents=True)
    paths = sorted(study.files.values())
    (folder / "nested" / "deeper" / "a.dcm").write_bytes(paths[0].read_bytes())
    (folder / "b.dcm").write_bytes(paths[1].read_bytes())
    (folder / "cut.dcm").write_bytes(paths[2].read_bytes()[:-1000])
    (folder / "notes.txt").write_text("not an image")
    env = {"DICOM_GATEWAY_DATABASE__URL": db_url}

    result = cli("import", str(folder), "--json", **env)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["imported"], summary["not_dicom"]) == (4, 2, 1)
    assert summary["refusals"] == [{"source": "cut.dcm", "reason": "dataset is truncated"}]
    assert "1 file(s) refused" in result.stderr
    assert len(_rows(db_url, Instance)) == 2
    spool = tmp_path / "var" / "spool"
    assert not [p for p in spool.rglob("*") if p.is_file()], "nothing may stay in the spool"
    assert (folder / "cut.dcm").exists() and (folder / "b.dcm").exists(), "sources untouched"
    audits = [row for row in _rows(db_url, AuditEntry) if row.event == "import"]
    assert len(audits) == 1 and audits[0].outcome == "failure"


def test_as_peer_records_the_peer_and_review_cases_are_quarantined(
    cli: Callable[..., Result], tmp_path: Path, db_url: str
) -> None:
    corpus = make_valid_study(tmp_path / "valid")
    folder = tmp_path / "cd"
    folder.mkdir()
    for kind in ("ct_a1_0", "sc_a1"):
        (folder / f"{kind}.dcm").write_bytes(corpus.files[kind].read_bytes())
    env = {"DICOM_GATEWAY_DATABASE__URL": db_url}
    added = cli("peer", "add", "clinic-a", "--ae-title", "CLINICA", "--host", "127.0.0.1",
                "--port", "104", "--role", "source", **env)
    assert added.exit_code == 0, added.output

    result = cli("import", str(folder), "--as-peer", "clinic-a", "--json", **env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["calling_ae_title"] == "CLINICA"
    assert (summary["imported"], summary["quarantined"]) == (1, 1)
    [instance] = _rows(db_url, Instance)
    assert (instance.source_peer, instance.calling_ae_title) == ("clinic-a", "CLINICA")
    held = cli("study", "quarantine", "--json", **env)
    assert [entry["calling_ae_title"] for entry in json.loads(held.stdout)] == ["CLINICA"]

    unknown = cli("import", str(folder), "--as-peer", "nobody", **env)
    assert unknown.exit_code == 3
    assert "peer 'nobody' not found" in unknown.stderr
