"""``dicom-gateway import`` of a DICOMDIR media tree made with DCMTK's dcmmkdir."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from pydicom import dcmread

from tests.conftest import require_tool
from tests.corpus import make_clinic_study
from tests.interop.conftest import indexed_count

pytestmark = pytest.mark.interop


def _media_tree(tmp_path: Path) -> tuple[Path, int]:
    """A CD as a clinic burns it: DICOMDIR at the root, 8-character upper-case file IDs."""
    study = make_clinic_study(tmp_path / "study", series=2, per_series=5)
    media = tmp_path / "CDROM"
    folder = media / "DICOM" / "ST000001"
    folder.mkdir(parents=True)
    for number, path in enumerate(sorted(study.files.values()), start=1):
        shutil.copyfile(path, folder / f"IM{number:06d}")
    run = subprocess.run([require_tool("dcmmkdir", "dcmtk"), "+r", "-Nxc", "+id", ".",
                          "+D", "DICOMDIR"],
                         cwd=media, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    (media / "README.TXT").write_text("Viewer for this disc: run SETUP.EXE\n")
    return media, len(study.files)


def _referenced(media: Path) -> int:
    """How many instances the DICOMDIR's records reference."""
    directory = dcmread(media / "DICOMDIR")
    return sum(1 for record in directory.DirectoryRecordSequence
               if "ReferencedFileID" in record and record.DirectoryRecordType == "IMAGE")


def test_import_of_a_dcmmkdir_media_tree_indexes_every_referenced_instance_once(
    cli: Callable[..., Result], tmp_path: Path, db_url: str
) -> None:
    media, count = _media_tree(tmp_path)
    assert _referenced(media) == count == 10
    env = {"DICOM_GATEWAY_DATABASE__URL": db_url}

    first = cli("import", str(media), "--json", **env)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["imported"] == count
    assert summary["already_present"] == 0
    assert summary["not_dicom"] == 1 and summary["dicomdir_skipped"] == 1
    assert summary["refused"] == 0 and summary["queued"] == 0
    assert summary["calling_ae_title"] == "IMPORT"
    assert indexed_count(db_url) == count
    assert "importing" in first.stderr  # the progress bar is on stderr

    second = cli("import", str(media), "--json", **env)
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["imported"] == 0
    assert again["already_present"] == count
    assert indexed_count(db_url) == count
    assert not list((tmp_path / "var" / "spool" / "incoming").iterdir())
