"""DCMTK's echoscu and storescu against the node started as a user starts it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require_tool, wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, indexed_count

pytestmark = pytest.mark.interop

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def test_echoscu(serve: Callable[..., ServedNode]) -> None:
    node = serve()
    run = subprocess.run([require_tool("echoscu", "dcmtk"), "-v", "-aet", "CLINIC",
                          "-aec", "GATEWAY", "127.0.0.1", str(node.port)],
                         capture_output=True, text=True, env=DCMTK_ENV, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Received Echo Response (Success)" in run.stdout + run.stderr


def test_storescu_study_of_three_series_is_acknowledged_indexed_and_de_identified(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=3, per_series=21)
    assert len(study.files) == 63
    node = serve()
    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-v", "-aet", "CLINIC", "-aec", "GATEWAY",
         "+sd", "--propose-lossless", "127.0.0.1", str(node.port), str(study.root)],
        capture_output=True, text=True, env=DCMTK_ENV, check=False, timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    statuses = re.findall(r"Received Store Response \((\w+)\)", output)
    assert statuses == ["Success"] * 63, output[-3000:]
    wait_until(lambda: indexed_count(node.database_url) == 63, timeout=120, what="63 indexed")
    stored = sorted((node.data_dir / "store").rglob("*.dcm"))
    assert len(stored) == 63
    for path in stored:
        data = path.read_bytes()
        leaked = [token for token in study.tokens if token.encode() in data]
        assert not leaked, f"{path.name} holds planted PHI {leaked}"
    log = node.log.read_text()
    leaked_in_log = [token for token in study.tokens if token in log]
    assert not leaked_in_log, f"the node's log holds planted PHI {leaked_in_log}"
