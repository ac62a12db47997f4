"""``dicom-gateway study release NAME``: a reviewed quarantine entry is ingested (audited)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

from storage.db import session_scope
from storage.models import AuditEntry, Instance
from storage.spool import SpoolMeta
from tests.conftest import wait_until
from tests.corpus import SECONDARY_CAPTURE, make_valid_study


def _indexed(node: Any) -> int:
    with session_scope(node.app.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_a_reviewed_secondary_capture_is_released_and_indexed(
    make_node: Callable[..., Any], cli: Callable[..., Result], tmp_path: Path, db_url: str
) -> None:
    corpus = make_valid_study(tmp_path / "valid")
    sc = dcmread(corpus.files["sc_a1"])
    assert sc.SOPClassUID == SECONDARY_CAPTURE and "BurnedInAnnotation" not in sc
    node = make_node()
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GATEWAY")
    assert assoc.send_c_store(sc).Status == 0x0000
    assoc.release()
    held_dir = node.app.spool.quarantined
    wait_until(lambda: any(held_dir.glob("*.dcm")), what="the SC quarantined")
    node.stop()  # the command alone ingests what it releases
    env = {"DICOM_GATEWAY_DATABASE__URL": db_url,
           "DICOM_GATEWAY_STORAGE__DATA_DIR": str(node.app.data_dir)}

    listed = json.loads(cli("study", "quarantine", "--json", **env).stdout)
    assert len(listed) == 1 and "BurnedInAnnotation" in listed[0]["reason"]
    assert json.loads(cli("study", "quarantine", "list", "--json", **env).stdout) == listed
    name = listed[0]["spool_name"]
    assert _indexed(node) == 0

    result = cli("study", "release", name, **env)
    assert result.exit_code == 0, result.output
    assert f"released {name}: stored" in result.stdout
    assert _indexed(node) == 1
    assert json.loads(cli("study", "quarantine", "--json", **env).stdout) == []
    assert not list(held_dir.iterdir()), "nothing is left in quarantine/"
    assert node.app.spool.depth() == 0
    with session_scope(node.app.engine) as session:
        audits = list(session.scalars(select(AuditEntry)
                                      .where(AuditEntry.event == "quarantine-release")))
        stored = session.scalars(select(Instance)).one()
    assert len(audits) == 1 and audits[0].detail == f"spool={name}"
    assert audits[0].actor not in ("", "CLINIC")  # the OS user, not the sender
    assert (stored.sop_class_uid, stored.calling_ae_title) == (SECONDARY_CAPTURE, "CLINIC")

    again = cli("study", "release", name, **env)
    assert again.exit_code == 3
    assert "not found" in again.stderr


def test_released_marker_is_written_and_old_sidecars_read_as_not_released(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from storage.spool import Spool

    spool = Spool(tmp_path / "spool")
    meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                     received_at=datetime(2026, 1, 2, tzinfo=UTC), peer_address="127.0.0.1")
    legacy = json.loads(meta.to_json())
    del legacy["released"]
    assert SpoolMeta.from_json(json.dumps(legacy).encode()).released is False
    entry = spool.accept_bytes(lambda fh: fh.write(b"data"), meta)
    claimed = spool.claim()
    assert claimed is not None and claimed.name == entry.name
    spool.quarantine(claimed, "needs review")
    back = spool.release_from_quarantine(entry.name)
    assert back.meta.released and back.path.parent == spool.incoming
    assert json.loads(back.meta_path.read_bytes())["released"] is True
    assert back.path.read_bytes() == b"data"
    assert not list(spool.quarantined.iterdir())
    reclaimed = spool.claim()
    assert reclaimed is not None and reclaimed.meta.released
