"""The C-FIND SCP in-process, driven by pynetdicom SCUs (SQLite and PostgreSQL).

Both information models at every level on the generated index
(tests/query_index.py); the statuses of PS3.4 C.4.1.1.4 and RELIABILITY.md
T23: pending 0xFF00/0xFF01, cancel 0xFE00 within a second, the result cap,
0xA900 for a bad identifier, 0x0124 for a caller without the query role;
per-peer scopes; combined date-time matching only when negotiated; and no
identifier in the logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)
from sqlalchemy import insert, select

from gateway.node import Node
from storage.audit import list_events
from storage.db import session_scope
from storage.models import Patient, PeerScope, Study, StudyState
from tests.query_index import (
    INSTANCES,
    SERIES,
    STUDIES,
    add_peer,
    modalities,
    populate,
    sop_classes,
)

Responses = list[tuple[int, Dataset | None]]


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    started = make_node()
    populate(started.app.engine)
    add_peer(started.app.engine, "specialist", "SPECIALIST", ("query",), PeerScope.ALL)
    add_peer(started.app.engine, "clinic-a", "CLINICA", ("source", "query"), PeerScope.SENT)
    add_peer(started.app.engine, "institute", "INSTITUTE", ("query",), PeerScope.ROUTED)
    add_peer(started.app.engine, "modality", "MODALITY", ("source",))
    return started


def _associate(port: int, ae_title: str = "SPECIALIST",
               datetime_matching: bool = False) -> Association:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(PATIENT_ROOT)
    ae.add_requested_context(STUDY_ROOT)
    ext_neg = []
    if datetime_matching:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = STUDY_ROOT
        item.service_class_application_information = b"\x00\x01"
        ext_neg.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY", ext_neg=ext_neg)
    assert assoc.is_established
    return assoc


def _find(port: int, ds: Dataset, model: Any = STUDY_ROOT, **kwargs: Any) -> Responses:
    assoc = _associate(port, **kwargs)
    try:
        return [(status.Status, identifier) for status, identifier in assoc.send_c_find(ds, model)]
    finally:
        assoc.release()


def _identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _set(value: Any) -> set[str]:
    """A multi-valued element's values; pydicom gives one value as a plain string."""
    return {value} if isinstance(value, str) else {str(item) for item in value}


def _matches(responses: Responses, keyword: str) -> list[str]:
    """The matches' values of ``keyword``, sorted: PS3.4 gives responses no order."""
    assert responses[-1] == (0x0000, None), responses[-1]
    return sorted(str(ds[keyword].value) for status, ds in responses[:-1]
                  if status in (0xFF00, 0xFF01) and ds is not None)


def test_study_root_study_level_returns_every_requested_key(node: Node) -> None:
    responses = _find(node.port, _identifier(
        "STUDY", PatientName="doe*", StudyInstanceUID="", StudyDate="", ModalitiesInStudy="",
        SOPClassesInStudy="", NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="",
        InstitutionName="", SpecificCharacterSet="ISO_IR 100"))
    expected = {s.uid: s for s in STUDIES
                if s.patient.patient_name.lower().startswith("doe")}
    assert _matches(responses, "StudyInstanceUID") == sorted(expected)
    assert all(status == 0xFF00 for status, _ in responses[:-1])
    first = responses[0][1]
    assert first is not None
    study = expected[str(first.StudyInstanceUID)]
    assert first.SpecificCharacterSet == "ISO_IR 192"
    assert first.QueryRetrieveLevel == "STUDY"
    assert first.RetrieveAETitle == "GATEWAY"
    assert str(first.PatientName) == study.patient.patient_name
    assert first.StudyDate == study.date
    assert _set(first.ModalitiesInStudy) == modalities(study)
    assert _set(first.SOPClassesInStudy) == sop_classes(study)
    assert first.NumberOfStudyRelatedSeries == len([s for s in SERIES if s.study == study])
    assert first.NumberOfStudyRelatedInstances == len(
        [i for i in INSTANCES if i.series.study == study])
    assert first["InstitutionName"].is_empty


def test_patient_root_at_every_level(node: Node) -> None:
    patients = _find(node.port, _identifier("PATIENT", PatientID="PID-000?", PatientName="",
                                            NumberOfPatientRelatedStudies=""), PATIENT_ROOT)
    assert _matches(patients, "PatientID") == ["PID-0001", "PID-0002", "PID-0003"]
    assert sorted(ds.NumberOfPatientRelatedStudies for _, ds in patients[:-1] if ds) == [2, 2, 2]
    studies = _find(node.port, _identifier("STUDY", PatientID="PID-0002", StudyInstanceUID="",
                                           StudyDate="-20231231"), PATIENT_ROOT)
    assert _matches(studies, "StudyInstanceUID") == ["2.25.1004"]
    series = _find(node.port, _identifier("SERIES", PatientID="PID-0002",
                                          StudyInstanceUID="2.25.1004", SeriesInstanceUID="",
                                          Modality="MR", NumberOfSeriesRelatedInstances=""),
                   PATIENT_ROOT)
    assert _matches(series, "SeriesInstanceUID") == ["2.25.1004.2"]
    images = _find(node.port, _identifier("IMAGE", PatientID="PID-0001",
                                          StudyInstanceUID="2.25.1001",
                                          SeriesInstanceUID="2.25.1001.1",
                                          SOPInstanceUID=["2.25.1001.1.1", "2.25.1001.1.3"],
                                          SOPClassUID=""), PATIENT_ROOT)
    assert _matches(images, "SOPInstanceUID") == ["2.25.1001.1.1", "2.25.1001.1.3"]
    assert all(ds.PatientID == "PID-0001" for _, ds in images[:-1] if ds)


def test_unsupported_key_with_a_value_gives_ff01(node: Node) -> None:
    responses = _find(node.port, _identifier("STUDY", StudyInstanceUID="2.25.1001",
                                             InstitutionName="FAKE*"))
    assert [status for status, _ in responses] == [0xFF01, 0x0000]
    identifier = responses[0][1]
    assert identifier is not None and identifier["InstitutionName"].is_empty


def test_combined_date_time_only_when_negotiated(node: Node) -> None:
    query = _identifier("STUDY", StudyInstanceUID="", StudyDate="20240105-20240131",
                        StudyTime="0900-2300")
    separate = _matches(_find(node.port, query), "StudyInstanceUID")
    combined = _matches(_find(node.port, query, datetime_matching=True), "StudyInstanceUID")
    assert separate == ["2.25.1001"]
    assert combined == ["2.25.1001", "2.25.1005", "2.25.1008"]


@pytest.mark.parametrize(("keys", "model", "comment"), [
    ({"StudyInstanceUID": ""}, STUDY_ROOT, "QueryRetrieveLevel is missing"),
    ({"QueryRetrieveLevel": "FRAME"}, STUDY_ROOT, "QueryRetrieveLevel: expected"),
    ({"QueryRetrieveLevel": "PATIENT"}, STUDY_ROOT, "not in the Study Root model"),
    ({"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}, STUDY_ROOT,
     "StudyInstanceUID: a single value is required"),
    ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, PATIENT_ROOT,
     "PatientID: a single value is required"),
])
def test_bad_identifiers_get_a900(node: Node, keys: dict[str, str], model: Any,
                                  comment: str) -> None:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    responses = _find(node.port, ds, model)
    assert len(responses) == 1
    status, identifier = responses[0]
    assert status == 0xA900 and identifier is None
    assoc = _associate(node.port)
    try:
        [(rsp, _)] = list(assoc.send_c_find(ds, model))
        assert comment in str(rsp.ErrorComment)
    finally:
        assoc.release()


def test_each_peer_sees_its_scope(node: Node) -> None:
    query = _identifier("STUDY", StudyInstanceUID="")
    assert _matches(_find(node.port, query, ae_title="CLINICA"), "StudyInstanceUID") == sorted(
        s.uid for s in STUDIES if s.sender == "clinic-a")
    assert _matches(_find(node.port, query, ae_title="SPECIALIST"), "StudyInstanceUID") == sorted(
        s.uid for s in STUDIES)
    assert _matches(_find(node.port, query, ae_title="INSTITUTE"), "StudyInstanceUID") == []
    # another sender's study is not found even by its UID, at any level
    other = next(s for s in STUDIES if s.sender != "clinic-a")
    assert _matches(_find(node.port, _identifier("SERIES", StudyInstanceUID=other.uid,
                                                 SeriesInstanceUID=""), ae_title="CLINICA"),
                    "SeriesInstanceUID") == []


@pytest.mark.parametrize("ae_title", ["MODALITY", "UNKNOWN"])
def test_callers_without_the_query_role_are_refused(node: Node, ae_title: str) -> None:
    responses = _find(node.port, _identifier("STUDY", StudyInstanceUID=""), ae_title=ae_title)
    assert [status for status, _ in responses] == [0x0124]
    with session_scope(node.app.engine, readonly=True) as session:
        events = [e for e in list_events(session) if e.event == "find-refused"]
    assert [e.actor for e in events] == [ae_title]


def test_result_cap_then_a700_and_the_association_goes_on(
        make_node: Callable[..., Node]) -> None:
    node = make_node(**{"query.max_results": 3})
    populate(node.app.engine)
    add_peer(node.app.engine, "specialist", "SPECIALIST", ("query",), PeerScope.ALL)
    assoc = _associate(node.port)
    try:
        capped = [(s.Status, s.get("ErrorComment"), ds) for s, ds in
                  assoc.send_c_find(_identifier("STUDY", StudyInstanceUID=""), STUDY_ROOT)]
        exact = [s.Status for s, _ in assoc.send_c_find(
            _identifier("STUDY", StudyInstanceUID="", StudyDate="20240131"), STUDY_ROOT)]
    finally:
        assoc.release()
    assert [status for status, _, _ in capped] == [0xFF00] * 3 + [0xA700]
    assert capped[-1][1] == "more than 3 matches; narrow the query"
    sent = {str(ds.StudyInstanceUID) for _, _, ds in capped[:3] if ds}
    assert len(sent) == 3 and sent <= {s.uid for s in STUDIES}
    assert exact == [0xFF00, 0xFF00, 0x0000]  # two matches, under the cap


def _many_studies(node: Node, count: int) -> None:
    now = datetime.now(UTC)
    with session_scope(node.app.engine) as session:
        session.execute(insert(Patient).values(patient_id="BULK", patient_name="BULK^ONE",
                                               patient_name_folded="bulk^one", patient_sex="O",
                                               patient_birth_date=""))
        patient_fk = session.execute(select(Patient.id)).scalar_one()
        session.execute(insert(Study), [
            {"patient_fk": patient_fk, "study_instance_uid": f"2.25.{900000 + n}",
             "study_date": "20240101", "study_time": "", "accession_number": "",
             "study_id": "", "study_description": "", "referring_physician_name": "",
             "modalities_in_study": "CT", "sop_classes_in_study": "",
             "number_of_study_related_series": 1, "number_of_study_related_instances": 1,
             "source_peer": None, "calling_ae_title": "MODALITY", "first_received_at": now,
             "last_received_at": now, "state": StudyState.ACTIVE}
            for n in range(count)])


def test_cancel_mid_stream_ends_with_fe00_at_once(make_node: Callable[..., Node]) -> None:
    node = make_node()
    total = 3000
    _many_studies(node, total)
    add_peer(node.app.engine, "specialist", "SPECIALIST", ("query",), PeerScope.ALL)
    assoc = _associate(node.port)
    try:
        context_id = next(cx.context_id for cx in assoc.accepted_contexts
                          if cx.abstract_syntax == STUDY_ROOT)
        responses: Iterator[Any] = assoc.send_c_find(
            _identifier("STUDY", StudyInstanceUID="", StudyDate=""), STUDY_ROOT, msg_id=7)
        first, _ = next(responses)
        assert first.Status == 0xFF00
        cancelled_at = time.monotonic()
        assoc.send_c_cancel(7, context_id)
        statuses = [status.Status for status, _ in responses]
        elapsed = time.monotonic() - cancelled_at
        again = [s.Status for s, _ in assoc.send_c_find(
            _identifier("STUDY", StudyInstanceUID="2.25.900000"), STUDY_ROOT, msg_id=8)]
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert set(statuses[:-1]) <= {0xFF00}
    # the stream stopped early: the node sends ahead of the caller by a bounded queue only
    assert len(statuses) < 200 < total
    assert elapsed < 1.0
    assert again == [0xFF00, 0x0000]


def test_identifiers_are_not_logged(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("pynetdicom", "gateway", "storage"):
        caplog.set_level(logging.DEBUG, logger=name)
    responses = _find(node.port, _identifier("STUDY", PatientName="Doe^Jane", PatientID="",
                                             StudyInstanceUID="", AccessionNumber=""))
    assert len(responses) == 3
    text = caplog.text
    assert "find calling_ae='SPECIALIST' root=study level=STUDY matches=2" in text
    for value in ("Doe^Jane", "PID-0001", "ACC-0001", "ACC-0002"):
        assert value not in text
