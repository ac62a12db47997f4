"""Consultation cases end to end with pynetdicom peers: a study out, a second opinion back.

A clinic (pynetdicom SCU, then a storage SCP as its PACS) sends a study to
the node; the node forwards it to institutes (pynetdicom storage SCPs);
each institute makes a Comprehensive SR and a Key Object Selection against
what it received and stores them back as a peer with the ``results`` role;
the node re-identifies them and sends them to the clinic. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    CTImageStorage,
    KeyObjectSelectionDocumentStorage,
)
from sqlalchemy import func, select

import storage.audit as audit
import storage.cases as cases
import storage.jobs as jobs
import storage.peers as peers
import storage.quarantine as quarantine
from gateway.cli import main
from gateway.node import Node
from storage.case_models import CaseResult, CaseState
from storage.db import session_scope
from storage.models import Instance, Study
from storage.records import PeerRecord
from tests.consult import Collector, all_values, make_kos, make_sr, references, to_bytes
from tests.conftest import TEST_KEY_HEX, wait_until
from tests.corpus import PATIENT_A, Corpus, make_clinic_study

FAST = {"forward.poll_seconds": 1, "forward.first_delay_seconds": 1,
        "forward.max_delay_seconds": 2}


@pytest.fixture
def collectors() -> Iterator[Callable[[str], Collector]]:
    started: list[Collector] = []

    def start(ae_title: str) -> Collector:
        started.append(Collector(ae_title))
        return started[-1]

    yield start
    for collector in started:
        collector.stop()


def _add(node: Node, slug: str, ae_title: str, port: int, roles: tuple[str, ...],
         pseudonyms: str = "shared") -> None:
    with session_scope(node.app.engine) as session:
        peers.add(session, PeerRecord(slug=slug, ae_title=ae_title, host="127.0.0.1",
                                      port=port, roles=roles, pseudonyms=pseudonyms))


def _store(node: Node, ae_title: str, datasets: list[Dataset], sop_classes: list[str]
           ) -> list[int]:
    ae = AE(ae_title=ae_title)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.app.settings.node.ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _send_study(node: Node, folder: Path, seed: int = 0) -> tuple[Corpus, str]:
    """The clinic stores a study; returns it and the node's (remapped) StudyInstanceUID."""
    study = make_clinic_study(folder, series=1, per_series=3, jpeg=False, seed=seed)
    statuses = _store(node, "CLINIC", [dcmread(p) for p in study.files.values()],
                      [CTImageStorage])
    assert statuses == [0] * 3
    original = study.studies["CLINIC"]

    def indexed() -> bool:
        with session_scope(node.app.engine, readonly=True) as session:
            return session.scalar(select(func.count()).select_from(Instance)) == 3 * (seed + 1)
    wait_until(indexed, what="study indexed")
    with session_scope(node.app.engine, readonly=True) as session:
        uids = list(session.scalars(select(Study.study_instance_uid).order_by(Study.id)))
    assert original not in uids
    return study, uids[seed]


def _forward(node: Node, study_uid: str, institute: str) -> cases.CaseRecord:
    with session_scope(node.app.engine) as session:
        assert jobs.enqueue(session, study_uid, institute, datetime.now(UTC)) is not None
        found = cases.list_cases(session, institute=institute, study_instance_uid=study_uid)
    assert len(found) == 1 and found[0].state is CaseState.SENT
    return found[0]


def _case(node: Node, case_id: int) -> cases.CaseRecord:
    with session_scope(node.app.engine, readonly=True) as session:
        found = cases.get(session, case_id)
    assert found is not None
    return found


def _originals(study: Corpus) -> set[str]:
    return {str(dcmread(p).SOPInstanceUID) for p in study.files.values()}


RESULT_CLASSES = [ComprehensiveSRStorage, KeyObjectSelectionDocumentStorage]


@pytest.mark.slow
def test_an_sr_and_a_kos_return_to_the_clinic_re_identified(
        collectors: Callable[[str], Collector], make_node: Callable[..., Node],
        tmp_path: Path) -> None:
    node = make_node(**FAST)
    institute, pacs = collectors("INSTA"), collectors("CLINIC")
    _add(node, "clinic", "CLINIC", pacs.port, ("source", "destination"))
    _add(node, "institute-a", "INSTA", institute.port, ("destination", "results"))
    study, study_uid = _send_study(node, tmp_path / "study")
    case = _forward(node, study_uid, "institute-a")
    assert case.clinic == "clinic" and case.instances == 3
    wait_until(lambda: _case(node, case.id).state is CaseState.DELIVERED, what="delivered")
    seen = institute.datasets()
    assert len(seen) == 3
    for ds in seen:  # the institute side never holds a planted token
        data = to_bytes(ds)
        assert not [t for t in study.tokens if t.encode() in data]
    sr, kos = make_sr(seen[:2]), make_kos(seen)
    assert _store(node, "INSTA", [sr, kos], RESULT_CLASSES) == [0, 0]

    wait_until(lambda: len(pacs.datasets()) == 2, what="results at the clinic PACS")
    wait_until(lambda: _case(node, case.id).state is CaseState.RETURNED, what="returned")
    back = {str(ds.SOPClassUID): ds for ds in pacs.datasets()}
    originals = _originals(study)
    invented = {str(seen[0].PatientID), str(seen[0].PatientName)} | (
        {str(seen[0].PatientBirthDate)} if seen[0].get("PatientBirthDate") else set())
    for ds in back.values():
        assert ds.PatientID == PATIENT_A.patient_id
        assert str(ds.PatientName) == f"{PATIENT_A.family}^{PATIENT_A.given}"
        assert (ds.IssuerOfPatientID, ds.PatientBirthDate, ds.PatientSex) == (
            PATIENT_A.issuer, PATIENT_A.birth_date, PATIENT_A.sex)
        assert ds.StudyInstanceUID == study.studies["CLINIC"]
        assert ds.PatientIdentityRemoved == "NO" and "DeidentificationMethod" not in ds
        refs = references(ds)
        assert refs and refs <= originals
        assert ds.SOPInstanceUID.startswith(node.app.settings.node.uid_root)
        values = {value for _keyword, value in all_values(ds)}
        assert not values & invented  # nothing the institute held for the patient
        assert study_uid not in values  # nor the node's own pseudonymous UIDs
        marker = ds.ContributingEquipmentSequence
        assert [item.PurposeOfReferenceCodeSequence[0].CodeValue for item in marker] == [
            "109102", "109103"]
        assert marker[0].InstitutionName == "institute-a"
    assert len(references(back[str(KeyObjectSelectionDocumentStorage)])) == 3
    with session_scope(node.app.engine, readonly=True) as session:
        events = audit.list_events(session, event="reidentify")
        assert len(events) == 2 and {e.study_instance_uid for e in events} == {study_uid}
        assert all(PATIENT_A.patient_id not in e.detail for e in events)
        assert _case(node, case.id).results == 2
        result_jobs = [j for j in jobs.list_jobs(session) if j.kind.value == "result"]
    assert [j.destination for j in result_jobs] == ["clinic"]
    assert len(institute.datasets()) == 3  # the institute's copy went nowhere, not even back
    with session_scope(node.app.engine, readonly=True) as session:  # nor into the index
        assert session.scalar(select(func.count()).select_from(Instance)) == 3
        assert session.scalar(select(func.count()).select_from(Study)) == 1

    # once the clinic has them, the re-identified files are not kept
    def purged() -> bool:
        with session_scope(node.app.engine, readonly=True) as session:
            return not list(session.scalars(select(CaseResult.file_path).where(
                CaseResult.file_path != "")))
    wait_until(purged, what="delivered results' files removed")
    stored = [p.read_bytes() for p in (node.app.data_dir / "store").rglob("*") if p.is_file()]
    assert stored and not [d for d in stored if PATIENT_A.patient_id.encode() in d]

    # the same result again is a repeat: nothing new goes to the clinic, nothing is written
    assert _store(node, "INSTA", [sr], RESULT_CLASSES[:1]) == [0]
    wait_until(lambda: node.app.spool.depth() == 0, what="repeat processed")
    assert _case(node, case.id).results == 2
    assert len([p for p in (node.app.data_dir / "store").rglob("*") if p.is_file()]) == len(
        stored)


@pytest.mark.slow
def test_own_spaces_results_return_to_their_study_and_crossed_pseudonyms_are_quarantined(
        collectors: Callable[[str], Collector], make_node: Callable[..., Node],
        tmp_path: Path) -> None:
    node = make_node(**FAST)
    inst_a, inst_b, pacs = collectors("INSTA"), collectors("INSTB"), collectors("CLINIC")
    _add(node, "clinic", "CLINIC", pacs.port, ("source", "destination"))
    _add(node, "institute-a", "INSTA", inst_a.port, ("destination", "results"), "own")
    _add(node, "institute-b", "INSTB", inst_b.port, ("destination", "results"), "own")
    first, first_uid = _send_study(node, tmp_path / "first", seed=0)
    second, second_uid = _send_study(node, tmp_path / "second", seed=1)
    case_a = _forward(node, first_uid, "institute-a")
    case_b = _forward(node, second_uid, "institute-b")
    wait_until(lambda: len(inst_a.datasets()) == 3 and len(inst_b.datasets()) == 3,
               what="both institutes received their study")
    seen_a, seen_b = inst_a.datasets(), inst_b.datasets()
    assert seen_a[0].StudyInstanceUID not in (first_uid, second_uid)  # re-keyed
    assert seen_a[0].PatientID != seen_b[0].PatientID  # unlinkable across institutes

    # institute A uses B's pseudonyms: matches no case of A's
    assert _store(node, "INSTA", [make_sr(seen_b)], RESULT_CLASSES[:1]) == [0]
    # each institute answers about what it received
    assert _store(node, "INSTA", [make_sr(seen_a)], RESULT_CLASSES[:1]) == [0]
    assert _store(node, "INSTB", [make_kos(seen_b)], RESULT_CLASSES[1:]) == [0]
    # and A adds a note in a study of its own that references nothing: its patient decides
    note = make_sr(seen_a[:1], "Addendum.")
    note.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.77"
    del note.CurrentRequestedProcedureEvidenceSequence
    note.ContentSequence = note.ContentSequence[:1]
    assert _store(node, "INSTA", [note], RESULT_CLASSES[:1]) == [0]
    wait_until(lambda: len(pacs.datasets()) == 3, what="the three results at the clinic")
    addenda = [ds for ds in pacs.datasets()
               if "Addendum." in str(ds.ContentSequence[0].get("TextValue", ""))]
    assert len(addenda) == 1 and addenda[0].StudyInstanceUID == first.studies["CLINIC"]
    assert addenda[0].PatientID == PATIENT_A.patient_id
    back = {str(ds.SOPClassUID): ds for ds in pacs.datasets() if ds not in addenda}
    # the patient pseudonym each institute holds, as the node computed it
    assert _case(node, case_a.id).institute_patient_id == seen_a[0].PatientID
    assert _case(node, case_b.id).institute_patient_id == seen_b[0].PatientID
    from_a, from_b = back[str(ComprehensiveSRStorage)], back[str(KeyObjectSelectionDocumentStorage)]
    assert from_a.StudyInstanceUID == first.studies["CLINIC"]
    assert references(from_a) <= _originals(first)
    assert from_b.StudyInstanceUID == second.studies["CLINIC"]
    assert references(from_b) == _originals(second)
    assert from_a.ContributingEquipmentSequence[0].InstitutionName == "institute-a"
    assert from_b.ContributingEquipmentSequence[0].InstitutionName == "institute-b"
    for ds in back.values():
        assert ds.PatientID == PATIENT_A.patient_id
        values = {value for _keyword, value in all_values(ds)}
        assert not values & {str(seen_a[0].PatientID), str(seen_b[0].PatientID)}
    assert (_case(node, case_a.id).results, _case(node, case_b.id).results) == (2, 1)
    with session_scope(node.app.engine, readonly=True) as session:
        held = quarantine.list_entries(session)
    assert len(held) == 1 and "matches no open case of that institute" in held[0].reason
    assert held[0].calling_ae_title == "INSTA"


def test_a_closed_case_takes_no_more_results(
        collectors: Callable[[str], Collector], make_node: Callable[..., Node],
        tmp_path: Path) -> None:
    node = make_node(**FAST)
    institute = collectors("INSTA")
    _add(node, "clinic", "CLINIC", 104, ("source",))
    _add(node, "institute-a", "INSTA", institute.port, ("destination", "results"))
    _study, study_uid = _send_study(node, tmp_path / "study")
    case = _forward(node, study_uid, "institute-a")
    wait_until(lambda: _case(node, case.id).state is CaseState.DELIVERED, what="delivered")
    with session_scope(node.app.engine) as session:
        assert cases.close(session, case.id, datetime.now(UTC)).state is CaseState.CLOSED
    assert _store(node, "INSTA", [make_kos(institute.datasets())], RESULT_CLASSES[1:]) == [0]

    def held() -> bool:
        with session_scope(node.app.engine, readonly=True) as session:
            return len(quarantine.list_entries(session)) == 1
    wait_until(held, what="result quarantined")
    assert _case(node, case.id).results == 0


def test_results_held_for_want_of_a_destination_go_where_return_to_names(
        collectors: Callable[[str], Collector], make_node: Callable[..., Node],
        tmp_path: Path, db_url: str) -> None:
    node = make_node(**FAST)
    institute, pacs = collectors("INSTA"), collectors("PACS")
    _add(node, "clinic", "CLINIC", 104, ("source",))  # the clinic takes nothing back itself
    _add(node, "pacs", "PACS", pacs.port, ("destination",))
    _add(node, "institute-a", "INSTA", institute.port, ("destination", "results"))
    study, study_uid = _send_study(node, tmp_path / "study")
    case = _forward(node, study_uid, "institute-a")
    wait_until(lambda: _case(node, case.id).state is CaseState.DELIVERED, what="delivered")
    assert _store(node, "INSTA", [make_kos(institute.datasets())], RESULT_CLASSES[1:]) == [0]
    wait_until(lambda: _case(node, case.id).state is CaseState.ANSWERED, what="answered")
    with session_scope(node.app.engine, readonly=True) as session:
        [held] = audit.list_events(session, event="result-return")
    assert held.outcome.value == "failure" and "no destination peer" in held.detail

    env = {name: None for name in os.environ if name.startswith("DICOM_GATEWAY_")}
    env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX, "DICOM_GATEWAY_DATABASE__URL": db_url,
                "DICOM_GATEWAY_STORAGE__DATA_DIR": str(node.app.data_dir)})
    moved = CliRunner().invoke(main, ["case", "return-to", str(case.id), "pacs"], env=env,
                               catch_exceptions=False)
    assert moved.exit_code == 0 and "queues 1 held result(s)" in moved.stdout, moved.output
    wait_until(lambda: len(pacs.datasets()) == 1, what="the result at the named PACS")
    wait_until(lambda: _case(node, case.id).state is CaseState.RETURNED, what="returned")
    [back] = pacs.datasets()
    assert back.PatientID == PATIENT_A.patient_id
    assert back.StudyInstanceUID == study.studies["CLINIC"]
