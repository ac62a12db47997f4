"""Forwarding to a consulting institute: DCMTK storescu -> the node -> Orthanc.

The node is started as a user starts it (``dicom-gateway serve``); Orthanc,
on loopback, is the institute, and its REST API is how the tests see what
arrived. The node's clock sends due jobs every second here. An Orthanc that
knows the node as a modality commits what it received (Storage Commitment,
the result on an association it opens to the node); one that does not
refuses, and the job says how it was confirmed instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from tests.conftest import require_tool, wait_until
from tests.corpus import Corpus, make_clinic_study
from tests.interop.conftest import ServedNode, free_port
from tests.interop.orthanc import Orthanc, start_orthanc

# end to end through Orthanc, several seconds each: run in CI, not in every developer run
pytestmark = [pytest.mark.interop, pytest.mark.slow]

FAST = {"DICOM_GATEWAY_FORWARD__POLL_SECONDS": "1",
        "DICOM_GATEWAY_FORWARD__FIRST_DELAY_SECONDS": "1",
        "DICOM_GATEWAY_FORWARD__MAX_DELAY_SECONDS": "2"}


def _store(node: ServedNode, folder: Path) -> None:
    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-aet", "CLINIC", "-aec", "GATEWAY", "+sd",
         "--propose-lossless",
         "127.0.0.1", str(node.port), str(folder)],
        capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, check=False,
        timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]


def _series(study: Corpus, numbers: set[int], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for key, path in study.files.items():
        if int(key.split("_")[0][1:]) in numbers:
            shutil.copy(path, folder / path.name)
    return folder


def _gw(cli: Callable[..., Result], node: ServedNode) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return cli(*args, DICOM_GATEWAY_DATABASE__URL=node.database_url,
                   DICOM_GATEWAY_STORAGE__DATA_DIR=str(node.data_dir))
    return run


def _jobs(gw: Callable[..., Result]) -> list[dict[str, Any]]:
    listed = gw("queue", "list", "--json")
    assert listed.exit_code == 0, listed.output
    jobs: list[dict[str, Any]] = json.loads(listed.stdout)
    return jobs


def _study_uid(gw: Callable[..., Result]) -> str:
    studies = json.loads(gw("study", "list", "--json").stdout)
    assert len(studies) == 1, studies
    return str(studies[0]["study_instance_uid"])


def _orthanc_sops(pacs: Orthanc) -> list[str]:
    return [pacs.get(f"/instances/{iid}/simplified-tags")["SOPInstanceUID"]
            for iid in pacs.get("/instances")]


def test_a_study_goes_to_the_institute_de_identified_and_late_series_follow_alone(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=3, per_series=8)
    node = serve(**FAST)
    # the institute knows the node as a modality: it reports Storage Commitment results to it
    pacs = orthanc({"gateway": ["GATEWAY", "127.0.0.1", node.port]})
    gw = _gw(cli, node)
    added = gw("peer", "add", "institute", "--ae-title", pacs.ae_title, "--host", "127.0.0.1",
               "--port", str(pacs.dicom_port), "--role", "destination")
    assert added.exit_code == 0, added.output

    _store(node, _series(study, {1, 2}, tmp_path / "first"))
    wait_until(lambda: bool(json.loads(gw("study", "list", "--json").stdout))
               and json.loads(gw("study", "list", "--json").stdout)[0]
               ["number_of_study_related_instances"] == 16, timeout=120, what="16 indexed")
    uid = _study_uid(gw)
    queued = gw("study", "forward", uid, "--to", "institute")
    assert queued.exit_code == 0 and "16 instance(s)" in queued.stdout, queued.output
    wait_until(lambda: [j["state"] for j in _jobs(gw)] == ["done"], timeout=120,
               what="the job delivered by the node's clock")
    [job] = _jobs(gw)
    assert (job["kind"], job["sent"], job["failed"], job["confirmed_by"]) == (
        "initial", 16, 0, "storage-commitment")
    assert "commitment report from=institute" in node.log.read_text()
    assert len(pacs.get("/instances")) == 16

    # nothing identifying reached the institute, in any stored byte
    for iid in pacs.get("/instances"):
        stored = pacs.request("GET", f"/instances/{iid}/file")
        assert isinstance(stored, bytes)
        assert not [token for token in study.tokens if token.encode() in stored], iid
    # forwarding again sends nothing: the institute has every instance
    again = gw("study", "forward", uid, "--to", "institute")
    assert again.exit_code == 0 and "nothing to send" in again.stdout

    # a late series: a follow-up job with only its instances
    _store(node, _series(study, {3}, tmp_path / "late"))
    wait_until(lambda: json.loads(gw("study", "list", "--json").stdout)[0]
               ["number_of_study_related_instances"] == 24, timeout=120, what="24 indexed")
    follow = gw("study", "forward", uid, "--to", "institute", "--now")
    assert follow.exit_code == 0 and "8 instance(s)" in follow.stdout, follow.output
    wait_until(lambda: all(j["state"] == "done" for j in _jobs(gw)), timeout=60,
               what="the follow-up delivered")
    kinds = sorted((j["kind"], j["sent"], j["confirmed_by"]) for j in _jobs(gw))
    assert kinds == [("follow-up", 8, "storage-commitment"), ("initial", 16, "storage-commitment")]
    sops = _orthanc_sops(pacs)
    assert len(sops) == len(set(sops)) == 24, "an instance reached the institute twice"
    assert not [t for t in study.tokens if t in node.log.read_text()]


def test_an_institute_that_is_down_gets_the_study_once_it_is_back(
    serve: Callable[..., ServedNode], cli: Callable[..., Result], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=12)
    dicom_port = free_port()
    node = serve(**FAST)
    gw = _gw(cli, node)
    assert gw("peer", "add", "institute", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
              "--port", str(dicom_port), "--role", "destination").exit_code == 0
    _store(node, study.root)
    wait_until(lambda: bool(json.loads(gw("study", "list", "--json").stdout)), timeout=120,
               what="the study indexed")
    wait_until(lambda: json.loads(gw("study", "list", "--json").stdout)[0]
               ["number_of_study_related_instances"] == 12, timeout=120, what="12 indexed")
    assert gw("study", "forward", _study_uid(gw), "--to", "institute").exit_code == 0
    wait_until(lambda: _jobs(gw)[0]["attempts"] >= 2, timeout=60,
               what="attempts against the stopped institute")
    [job] = _jobs(gw)
    assert job["state"] in ("pending", "sending") and job["sent"] == 0
    assert "association" in job["last_error"] or job["state"] == "sending", job

    pacs = start_orthanc(tmp_path / "orthanc", free_port(), dicom_port)
    try:
        wait_until(lambda: _jobs(gw)[0]["state"] == "done", timeout=60,
                   what="delivered once the institute is back")
        sops = _orthanc_sops(pacs)
        assert len(sops) == len(set(sops)) == 12
    finally:
        pacs.stop()


def test_a_route_sends_ct_from_one_clinic_only(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    from_a = make_clinic_study(tmp_path / "a", series=2, per_series=5, seed=0)
    from_b = make_clinic_study(tmp_path / "b", series=1, per_series=4, seed=1, jpeg=False)
    node = serve(**FAST, DICOM_GATEWAY_FORWARD__STABLE_AFTER_SECONDS="1")
    # the institute knows the node as a modality: it confirms by Storage Commitment
    pacs = orthanc({"gateway": ["GATEWAY", "127.0.0.1", node.port]})
    gw = _gw(cli, node)
    for command in (
        ["peer", "add", "clinic-a", "--ae-title", "CLINICA", "--host", "127.0.0.1",
         "--port", "104", "--role", "source"],
        ["peer", "add", "clinic-b", "--ae-title", "CLINICB", "--host", "127.0.0.1",
         "--port", "104", "--role", "source"],
        ["peer", "add", "institute", "--ae-title", pacs.ae_title, "--host", "127.0.0.1",
         "--port", str(pacs.dicom_port), "--role", "destination"],
        ["route", "add", "ct-from-a", "--to", "institute", "--when", "SendingPeer=clinic-a",
         "--when", "ModalitiesInStudy=CT"],
    ):
        done = gw(*command)
        assert done.exit_code == 0, (command, done.output)
    for calling, study in (("CLINICA", from_a), ("CLINICB", from_b)):
        run = subprocess.run(
            [require_tool("storescu", "dcmtk"), "-aet", calling, "-aec", "GATEWAY", "+sd",
             "--propose-lossless", "127.0.0.1", str(node.port), str(study.root)],
            capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"},
            check=False, timeout=300)
        assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    wait_until(lambda: len(pacs.get("/instances")) >= 10 and _jobs(gw)
               and _jobs(gw)[0]["state"] == "done", timeout=120,
               what="clinic A's study routed and delivered")
    studies = json.loads(gw("study", "list", "--json").stdout)
    assert len(studies) == 2
    [job] = _jobs(gw)
    assert (job["route"], job["destination"], job["sent"], job["confirmed_by"]) == (
        "ct-from-a", "institute", 10, "storage-commitment")
    sent_from_a = {s["study_instance_uid"] for s in studies if s["source_peer"] == "clinic-a"}
    assert {job["study_instance_uid"]} == sent_from_a
    assert len(pacs.get("/instances")) == 10 and len(pacs.get("/studies")) == 1
    for iid in pacs.get("/instances"):
        stored = pacs.request("GET", f"/instances/{iid}/file")
        assert not [t for t in from_a.tokens if t.encode() in stored], iid
    explained = gw("route", "test", sent_from_a.pop())
    assert explained.exit_code == 0 and "ct-from-a" in explained.stdout


def test_kill_9_while_forwarding_300_instances_then_restart_delivers_each_once(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=3, per_series=100, jpeg=False)
    pacs = orthanc()
    settings = {**FAST, "DICOM_GATEWAY_FORWARD__STABLE_AFTER_SECONDS": "1",
                "DICOM_GATEWAY_FORWARD__LEASE_SECONDS": "10"}
    node = serve(**settings)
    gw = _gw(cli, node)
    for command in (
        ["peer", "add", "institute", "--ae-title", pacs.ae_title, "--host", "127.0.0.1",
         "--port", str(pacs.dicom_port), "--role", "destination"],
        ["route", "add", "everything", "--to", "institute"],
    ):
        assert gw(*command).exit_code == 0
    _store(node, study.root)
    wait_until(lambda: len(pacs.get("/instances")) >= 60, timeout=180,
               what="forwarding under way")
    node.kill()
    arrived = len(pacs.get("/instances"))
    assert arrived < 300, "the kill came after the whole study was forwarded"
    [job] = _jobs(gw)
    assert job["state"] == "sending" and job["sent"] < 300

    restarted = serve(data_dir=node.data_dir, **settings)
    wait_until(lambda: _jobs(_gw(cli, restarted))[0]["state"] == "done", timeout=180,
               what="the job finished after the restart")
    [done] = _jobs(_gw(cli, restarted))
    assert (done["sent"], done["failed"], done["pending"]) == (300, 0, 0)
    assert done["attempts"] >= 2  # the killed attempt, then at least one after the restart
    sops = _orthanc_sops(pacs)
    assert len(sops) == len(set(sops)) == 300, "an instance is missing or stored twice"


def test_destinations_with_their_own_pseudonyms_cannot_link_each_others_patients(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    first = make_clinic_study(tmp_path / "first", series=1, per_series=3, seed=0, jpeg=False)
    second = make_clinic_study(tmp_path / "second", series=1, per_series=2, seed=1, jpeg=False)
    node = serve(**FAST, DICOM_GATEWAY_FORWARD__STABLE_AFTER_SECONDS="1")
    gateway = {"gateway": ["GATEWAY", "127.0.0.1", node.port]}
    left, right = orthanc(gateway), orthanc(gateway)
    gw = _gw(cli, node)
    for slug, pacs in (("left", left), ("right", right)):
        assert gw("peer", "add", slug, "--ae-title", pacs.ae_title, "--host", "127.0.0.1",
                  "--port", str(pacs.dicom_port), "--role", "destination",
                  "--pseudonyms", "own").exit_code == 0
    assert gw("route", "add", "both", "--to", "left,right").exit_code == 0
    _store(node, first.root)
    _store(node, second.root)
    wait_until(lambda: len(left.get("/instances")) == 5 and len(right.get("/instances")) == 5,
               timeout=120, what="both studies at both institutes")
    # each institute committed the instances under the UIDs it received (its own space)
    wait_until(lambda: len(_jobs(gw)) == 4 and all(j["state"] == "done" for j in _jobs(gw)),
               timeout=60, what="the four jobs done")
    assert {j["confirmed_by"] for j in _jobs(gw)} == {"storage-commitment"}

    def seen(pacs: Orthanc) -> tuple[set[str], set[str], set[str]]:
        tags = [pacs.get(f"/instances/{iid}/simplified-tags") for iid in pacs.get("/instances")]
        return ({t["PatientID"] for t in tags}, {t["StudyInstanceUID"] for t in tags},
                {t["SOPInstanceUID"] for t in tags})

    left_ids, left_studies, left_sops = seen(left)
    right_ids, right_studies, right_sops = seen(right)
    # one patient: the same pseudonym for both studies within each institute
    assert len(left_ids) == 1 and len(right_ids) == 1
    assert len(left_studies) == 2 and len(right_studies) == 2
    # and nothing in common between the institutes, nor with the node's own space
    assert not left_ids & right_ids
    assert not left_studies & right_studies and not left_sops & right_sops
    ours = json.loads(gw("study", "list", "--json").stdout)
    assert not {s["patient_id"] for s in ours} & (left_ids | right_ids)
    assert not {s["study_instance_uid"] for s in ours} & (left_studies | right_studies)
    for pacs in (left, right):
        for iid in pacs.get("/instances"):
            stored = pacs.request("GET", f"/instances/{iid}/file")
            assert not [t for t in first.tokens if t.encode() in stored], iid
