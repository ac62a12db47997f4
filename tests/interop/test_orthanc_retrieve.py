"""Orthanc retrieves from the node through its REST API: query, then C-MOVE to itself.

The whole way a study travels: a clinic sends three studies to the node
started as a user starts it (``dicom-gateway serve``), which de-identifies,
stores and indexes them; Orthanc, registered at the node as a peer with the
query, retrieve and destination roles (and knowing the node as a modality),
creates a query with ``POST /modalities/gateway/query`` and retrieves its
answer with ``POST /queries/{id}/retrieve``: a single series of a study of
two series, then the whole study. Orthanc's own count and SOP Instance UIDs must be
exactly those the node indexed for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from sqlalchemy import Engine, func, select

from storage.db import make_engine, session_scope
from storage.models import Instance, PeerScope, Series, Study
from storage.schema import upgrade
from tests.conftest import wait_until
from tests.interop.conftest import ServedNode, free_port
from tests.interop.orthanc import ORTHANC_AE_TITLE, Orthanc
from tests.query_index import add_peer
from tests.retrieve_store import ITEMS, NAMES, image

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _indexed(engine: Engine) -> dict[tuple[str, str], list[str]]:
    """(new StudyInstanceUID, new SeriesInstanceUID) -> new SOP Instance UIDs."""
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(
            select(Study.study_instance_uid, Series.series_instance_uid,
                   Instance.sop_instance_uid)
            .join(Series, Series.study_fk == Study.id)
            .join(Instance, Instance.series_fk == Series.id)
        ).all()
    found: dict[tuple[str, str], list[str]] = {}
    for study, series, sop in rows:
        found.setdefault((study, series), []).append(sop)
    return found


def _count(engine: Engine) -> int:
    with session_scope(engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _send_as_clinic(port: int) -> None:
    ae = AE(ae_title="CLINIC")
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [RLELossless])
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(image(item)).Status for item in ITEMS]
    finally:
        assoc.release()
    assert statuses == [0x0000] * len(ITEMS)


def _orthanc_sops(pacs: Orthanc) -> list[str]:
    return sorted(str(instance["MainDicomTags"]["SOPInstanceUID"])
                  for instance in pacs.get("/instances?expand"))


def _retrieve(pacs: Orthanc, level: str, query: dict[str, str]) -> Any:
    answer = pacs.post_json("/modalities/gateway/query", {"Level": level, "Query": query})
    query_id = answer["ID"]
    assert pacs.get(f"/queries/{query_id}/answers") == ["0"]
    return pacs.post_json(f"/queries/{query_id}/retrieve",
                          {"TargetAet": ORTHANC_AE_TITLE, "Synchronous": True})


def test_orthanc_retrieves_a_study_and_a_series_through_rest(
        serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc], db_url: str) -> None:
    port = free_port()
    pacs = orthanc({"gateway": ["GATEWAY", "127.0.0.1", port]})
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        add_peer(engine, "orthanc", ORTHANC_AE_TITLE, ("query", "retrieve", "destination"),
                 PeerScope.ALL, port=pacs.dicom_port)
        node = serve(port=port)
        _send_as_clinic(node.port)
        wait_until(lambda: _count(engine) == len(ITEMS), timeout=120, what="every image indexed")
        indexed = _indexed(engine)
    finally:
        engine.dispose()
    studies: dict[str, list[str]] = {}
    for (study, _series), sops in indexed.items():
        studies.setdefault(study, []).extend(sops)
    [(study, study_sops)] = [(uid, sops) for uid, sops in studies.items() if len(sops) == 5]
    # one series of the study of two (the two MR images): that series and nothing else
    [(series, series_sops)] = [(series, sops) for (uid, series), sops in indexed.items()
                               if uid == study and len(sops) == 2]
    _retrieve(pacs, "Series", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
    assert pacs.get("/statistics")["CountInstances"] == 2
    assert _orthanc_sops(pacs) == sorted(series_sops)
    # then the whole study: its other series arrives too
    _retrieve(pacs, "Study", {"StudyInstanceUID": study})
    assert pacs.get("/statistics")["CountInstances"] == 5
    assert _orthanc_sops(pacs) == sorted(study_sops)
    # what Orthanc holds is what the node stored: de-identified, not the clinic's values
    original = {item.sop for item in ITEMS}
    assert not original & set(_orthanc_sops(pacs))
    names = {str(patient["MainDicomTags"].get("PatientName", ""))
             for patient in pacs.get("/patients?expand")}
    assert names and not names & set(NAMES.values())
