"""Files whose 128-byte preamble holds an executable header (RELIABILITY T21, CVE-2019-11687).

A DICOM file may be a valid Windows or Linux executable at the same time:
PS3.10 7.1 leaves the preamble to applications. ``dicom-gateway import``
imports such a file with its preamble replaced by zeros, counts and logs
it, and records the count in its audit record; nothing it stores, spools
or quarantines keeps the executable header. ``dicom-gateway anonymize``
writes a zero preamble whatever its input had.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select

from storage.db import make_engine, session_scope
from storage.models import AuditEntry
from tests.corpus import make_clinic_study

HEADERS = {"pe.dcm": b"MZ\x90\x00\x03\x00\x00\x00", "elf.dcm": b"\x7fELF\x02\x01\x01\x00"}
ZERO = bytes(128)


def _polyglots(tmp_path: Path) -> Path:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=3, jpeg=False)
    folder = tmp_path / "disc"
    folder.mkdir()
    paths = sorted(study.files.values())
    for (name, header), path in zip(HEADERS.items(), paths):
        data = path.read_bytes()
        assert data[:128] == ZERO and data[128:132] == b"DICM"
        (folder / name).write_bytes(header + b"\xcc" * (128 - len(header)) + data[128:])
    (folder / "plain.dcm").write_bytes(paths[2].read_bytes())
    return folder


def _audit_details(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return [row.detail for row in session.scalars(
                select(AuditEntry).where(AuditEntry.event == "import"))]
    finally:
        engine.dispose()


def test_an_executable_preamble_is_replaced_counted_and_audited(
        cli: Callable[..., Result], tmp_path: Path, db_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    folder = _polyglots(tmp_path)
    caplog.set_level(logging.INFO, logger="gateway")
    result = cli("import", str(folder), "--json", DICOM_GATEWAY_DATABASE__URL=db_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["imported"], summary["preamble_replaced"]) == (3, 2)
    assert caplog.text.count("preamble=non-zero action=replaced-with-zeros") == 2
    assert [d for d in _audit_details(db_url) if "preamble_replaced=2" in d]
    data_dir = tmp_path / "var"
    written = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix == ".dcm"]
    assert len(written) == 3
    for path in written:
        head = path.read_bytes()[:132]
        assert head == ZERO + b"DICM", f"{path.name}: preamble not zero"
    leftovers = [p for p in (data_dir / "spool").rglob("*") if p.is_file()]
    assert leftovers == []
    for name in HEADERS:  # the sources are untouched
        assert (folder / name).read_bytes()[:2] in (b"MZ", b"\x7fE")


def test_anonymize_writes_a_zero_preamble(cli: Callable[..., Result], tmp_path: Path) -> None:
    folder = _polyglots(tmp_path)
    out = tmp_path / "out"
    result = cli("anonymize", str(folder), str(out), "--recursive")
    assert result.exit_code == 0, result.output
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(written) == 3
    for path in written:
        assert path.read_bytes()[:132] == ZERO + b"DICM", f"{path.name}: preamble not zero"
