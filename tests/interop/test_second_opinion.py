"""The second opinion's round trip with real programs: DCMTK -> the node -> Orthanc -> back.

DCMTK storescu plays the clinic and sends a study to ``dicom-gateway
serve``; the node forwards it de-identified to Orthanc (the consulting
institute, a peer with the ``destination`` and ``results`` roles). A
Comprehensive SR and a Key Object Selection are made against what Orthanc
holds (as the institute would), uploaded to Orthanc and stored back to the
node by Orthanc itself (REST ``/modalities/{id}/store``). The node matches
them to the case, re-identifies them and forwards them to a DCMTK storescp
playing the clinic's PACS, where they must carry the clinic's real patient
and study, and every reference must resolve to an instance the clinic sent.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import Result
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.consult import all_values, make_kos, make_sr, references
from tests.conftest import require_tool, wait_until
from tests.corpus import PATIENT_A, make_clinic_study
from tests.interop.conftest import ServedNode, free_port
from tests.interop.orthanc import Orthanc

pytestmark = [pytest.mark.interop, pytest.mark.slow]

FAST = {"DICOM_GATEWAY_FORWARD__POLL_SECONDS": "1",
        "DICOM_GATEWAY_FORWARD__FIRST_DELAY_SECONDS": "1",
        "DICOM_GATEWAY_FORWARD__MAX_DELAY_SECONDS": "2"}
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _echo(port: int, ae_title: str) -> bool:
    run = subprocess.run([require_tool("echoscu", "dcmtk"), "-aec", ae_title, "-to", "2",
                          "127.0.0.1", str(port)], capture_output=True, check=False,
                         env=DCMTK_ENV)
    return run.returncode == 0


@pytest.fixture
def clinic_pacs(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A DCMTK storescp as the clinic's PACS (AE title CLINIC): its port and folder."""
    folder = tmp_path / "clinic-pacs"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [require_tool("storescp", "dcmtk"), "-aet", "CLINIC", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_until(lambda: _echo(port, "CLINIC"), timeout=30, what="storescp answers C-ECHO")
        yield port, folder
    finally:
        process.terminate()
        process.wait(20)


def _readable(folder: Path) -> list[Dataset]:
    found = []
    for path in sorted(folder.iterdir()):
        try:
            found.append(dcmread(path))
        except Exception:  # still being written
            return []
    return found


def _gw(cli: Callable[..., Result], node: ServedNode) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return cli(*args, DICOM_GATEWAY_DATABASE__URL=node.database_url,
                   DICOM_GATEWAY_STORAGE__DATA_DIR=str(node.data_dir))
    return run


def _json(gw: Callable[..., Result], *args: str) -> object:
    result = gw(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_sr_and_a_kos_from_orthanc_file_under_the_clinic_s_real_study(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    clinic_pacs: tuple[int, Path], cli: Callable[..., Result], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=2, per_series=3, jpeg=False)
    node_port = free_port()
    institute = orthanc({"gateway": ["GATEWAY", "127.0.0.1", node_port]})
    node = serve(port=node_port, **FAST)
    gw = _gw(cli, node)
    pacs_port, pacs_folder = clinic_pacs
    for args in (("clinic", "CLINIC", pacs_port, "source", "destination"),
                 ("institute", institute.ae_title, institute.dicom_port, "destination",
                  "results")):
        slug, ae_title, port, *roles = args
        added = gw("peer", "add", str(slug), "--ae-title", str(ae_title), "--host",
                   "127.0.0.1", "--port", str(port),
                   *[item for role in roles for item in ("--role", str(role))])
        assert added.exit_code == 0, added.output

    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-aet", "CLINIC", "-aec", "GATEWAY", "+sd",
         "127.0.0.1", str(node_port), str(study.root)],
        capture_output=True, text=True, env=DCMTK_ENV, check=False, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]

    def indexed() -> bool:
        studies = _json(gw, "study", "list")
        assert isinstance(studies, list)
        return bool(studies) and studies[0]["number_of_study_related_instances"] == 6
    wait_until(indexed, timeout=120, what="6 instances indexed")
    [summary] = _json(gw, "study", "list")  # type: ignore[misc]
    uid = str(summary["study_instance_uid"])
    assert gw("study", "forward", uid, "--to", "institute").exit_code == 0

    def case() -> dict[str, object]:
        [found] = _json(gw, "case", "list")  # type: ignore[misc]
        assert isinstance(found, dict)
        return found
    wait_until(lambda: case()["state"] == "delivered", timeout=120, what="case delivered")
    assert case()["clinic"] == "clinic"

    # the institute reads what it has: de-identified, no planted token in any byte
    held: list[Dataset] = []
    for iid in institute.get("/instances"):
        data = institute.request("GET", f"/instances/{iid}/file")
        assert isinstance(data, bytes)
        assert not [token for token in study.tokens if token.encode() in data], iid
        held.append(dcmread(BytesIO(data)))
    assert len(held) == 6
    held.sort(key=lambda ds: (str(ds.SeriesInstanceUID), int(ds.InstanceNumber)))
    made = {"sr": make_sr(held[:2], "Second reader: no nodule."), "kos": make_kos(held)}
    ids = []
    for name, ds in made.items():
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ids.append(institute.upload(path)["ID"])
    answer = institute.post_json("/modalities/gateway/store",
                                 {"Resources": ids, "Synchronous": True})
    assert isinstance(answer, dict) and answer.get("FailedInstancesCount", 0) == 0, answer

    wait_until(lambda: len(_readable(pacs_folder)) == 2, timeout=120,
               what="both results at the clinic's PACS")
    wait_until(lambda: case()["state"] == "returned", timeout=60, what="case returned")
    back = {str(ds.Modality): ds for ds in _readable(pacs_folder)}
    originals = {str(dcmread(p).SOPInstanceUID): str(dcmread(p).SeriesInstanceUID)
                 for p in study.files.values()}
    invented = {str(held[0].PatientID), str(held[0].PatientName)}
    for ds in back.values():
        assert ds.PatientID == PATIENT_A.patient_id
        assert str(ds.PatientName) == f"{PATIENT_A.family}^{PATIENT_A.given}"
        assert (ds.IssuerOfPatientID, ds.PatientBirthDate, ds.PatientSex) == (
            PATIENT_A.issuer, PATIENT_A.birth_date, PATIENT_A.sex)
        assert ds.StudyInstanceUID == study.studies["CLINIC"]
        assert references(ds) and references(ds) <= set(originals)
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == study.studies["CLINIC"]
        for series in evidence.ReferencedSeriesSequence:
            for ref in series.ReferencedSOPSequence:
                assert originals[ref.ReferencedSOPInstanceUID] == series.SeriesInstanceUID
        assert not {value for _keyword, value in all_values(ds)} & invented
        assert ds.ContributingEquipmentSequence[0].InstitutionName == "institute"
    assert str(back["SR"].ContentSequence[0].TextValue) == "Second reader: no nodule."
    assert len(references(back["KO"])) == 6

    trip = _json(gw, "case", "show", str(case()["id"]))
    assert isinstance(trip, dict)
    assert len(trip["results"]) == 2
    initial, *returned = trip["jobs"]
    assert (initial["kind"], initial["destination"], initial["state"]) == (
        "initial", "institute", "done")
    # the SR and the KOS go back in one job, or in two when the second reached the node
    # after the first was routed (a follow-up); either way each is sent once
    assert returned and all((j["kind"], j["destination"], j["state"]) == (
        "result", "clinic", "done") for j in returned), returned
    assert sum(j["sent"] for j in returned) == 2 and not any(j["failed"] for j in returned)
    assert sum(e["event"] == "reidentify" for e in trip["audit"]) == 2
    log = node.log.read_text()
    assert not [token for token in study.tokens if token in log]
