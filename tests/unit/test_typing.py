"""mypy --strict over the four packages, CLI included (configuration in setup.cfg)."""

from __future__ import annotations

import os
from pathlib import Path

from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_passes() -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        stdout, stderr, status = mypy_api.run(["--config-file", str(ROOT / "setup.cfg")])
    finally:
        os.chdir(cwd)
    assert status == 0, stdout + stderr
