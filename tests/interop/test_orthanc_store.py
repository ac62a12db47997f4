"""Orthanc, a clinic's PACS, pushes a study to the node (REST /modalities/{id}/store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.db import make_engine, session_scope
from storage.models import Instance, Study
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, free_port
from tests.interop.orthanc import Orthanc

pytestmark = pytest.mark.interop


def _counts(url: str) -> tuple[int, int, set[str]]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            instances = int(session.scalar(select(func.count()).select_from(Instance)) or 0)
            studies = int(session.scalar(select(func.count()).select_from(Study)) or 0)
            callers = set(session.scalars(select(Instance.calling_ae_title).distinct()))
            return instances, studies, callers
    finally:
        engine.dispose()


def test_orthanc_pushes_a_study_and_every_instance_is_indexed(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=2, per_series=6)
    node = serve(port=free_port())
    pacs = orthanc({"gateway": ["GATEWAY", "127.0.0.1", node.port]})
    orthanc_study_ids = {pacs.upload(path)["ParentStudy"] for path in study.files.values()}
    assert len(orthanc_study_ids) == 1
    [study_id] = orthanc_study_ids
    assert len(pacs.get(f"/studies/{study_id}/instances")) == len(study.files) == 12

    answer = pacs.post_json("/modalities/gateway/store", study_id)
    assert answer["FailedInstancesCount"] == 0, answer
    assert answer["InstancesCount"] == 12, answer

    wait_until(lambda: _counts(node.database_url)[0] == 12, timeout=120, what="12 indexed")
    instances, studies, callers = _counts(node.database_url)
    assert (instances, studies, callers) == (12, 1, {"ORTHANC"})
    log = node.log.read_text()
    assert not [token for token in study.tokens if token in log]
