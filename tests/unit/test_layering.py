"""The import matrix of ARCHITECTURE.md, checked with ast: imports point down.

gateway may import storage, anonymizer and config; storage may import config;
anonymizer and config import no project package; storage never imports
pydicom or pynetdicom; anonymizer never imports a database or network library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"gateway", "storage", "anonymizer", "config"}
ALLOWED = {
    "gateway": {"gateway", "storage", "anonymizer", "config"},
    "storage": {"storage", "config"},
    "anonymizer": {"anonymizer"},
    "config": {"config"},
}
FORBIDDEN_LIBRARIES = {
    "storage": {"pydicom", "pynetdicom"},
    "anonymizer": {"pynetdicom", "sqlalchemy", "alembic", "apscheduler", "click", "socket"},
    "config": {"pydicom", "pynetdicom", "sqlalchemy", "click"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_imports_point_down(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        imported = _imports(path)
        wrong = (imported & PROJECT) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
        banned = imported & FORBIDDEN_LIBRARIES.get(package, set())
        assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"


def test_modules_stay_small() -> None:
    for package in sorted(PROJECT):
        for path in (ROOT / package).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 450, f"{path.relative_to(ROOT)} has {lines} lines: split it"
