"""Two ``serve`` nodes on one PostgreSQL database and one shared data folder.

ARCHITECTURE.md, scale-out; durability contract 3. Both nodes start at once
on an empty database (the schema migrations serialise on an advisory lock),
each with its own spool (``storage.spool_dir``), and share the file store.
1,000 small instances in 20 studies are pushed half to each node, two
studies split across both, as a TCP load balancer would spread them. One
route sends everything to one Orthanc. Once every instance is indexed, the
node that is sending a job is killed (SIGKILL) half-way through it; the
other takes the job up after its lease expires and finishes the queue.

Orthanc keeps one copy per SOP Instance UID, so what it stores cannot show
a repeat; it also logs every instance it receives
(:meth:`tests.interop.orthanc.Orthanc.received`), which can. Every study
arrives whole, as exactly one job; no instance arrives twice, except those
the killed node had sent but not yet recorded (at most one commit batch of
the killed job: what the durability contract allows a crash to repeat).

PostgreSQL only: SQLite is the single-node engine. Without
``DICOM_GATEWAY_TEST_POSTGRESQL_URL`` the test fails, as every PostgreSQL
case does (tests/fixtures_db.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from pydicom import dcmread
from sqlalchemy import Engine, func, select

from anonymizer import KeyedPseudonyms
from gateway.forwarder import _COMMIT_EVERY
from storage.db import make_engine, session_scope
from storage.models import Instance, Study
from storage.queue_models import ForwardItem, ForwardJob, ItemState, JobKind, JobState
from tests.conftest import TEST_KEY_HEX, require_tool, wait_until
from tests.corpus import Corpus, make_clinic_study
from tests.interop.conftest import ServedNode, wait_served
from tests.interop.orthanc import Orthanc

pytestmark = [pytest.mark.interop, pytest.mark.slow]

STUDIES = 20
PER_SERIES = 25  # two series: 50 instances a study, 1,000 in all
SPLIT = {0, 10}  # studies whose first series goes to one node and second to the other
LEASE_SECONDS = 15


def _push(nodes: list[ServedNode], folders: list[Path]) -> None:
    """One storescu per node, all at once; every instance must be acknowledged."""
    storescu = require_tool("storescu", "dcmtk")
    senders = [subprocess.Popen(
        [storescu, "-aet", "CLINIC", "-aec", "GATEWAY", "+sd", "127.0.0.1", str(node.port),
         str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TCP_NODELAY": "1"}) for node, folder in zip(nodes, folders)]
    for sender in senders:
        output, _ = sender.communicate(timeout=600)
        assert sender.returncode == 0, output[-2000:]


def _spread(studies: list[Corpus], root: Path) -> list[Path]:
    """Two folders of 500 instances: studies 0-9 to the first, 10-19 to the second,
    except the split ones, whose second series goes to the other node.

    storescu sends a folder in name order: the split studies go first from
    both, so that their halves arrive together. Were they sent more than
    ``stable_after_seconds`` apart, the second half would rightly be late
    (a follow-up job).
    """
    folders = [root / "to-a", root / "to-b"]
    for folder in folders:
        folder.mkdir(parents=True)
    for number, study in enumerate(studies):
        home = 0 if number < STUDIES // 2 else 1
        for key, path in study.files.items():
            second_series = key.startswith("s2_")
            target = 1 - home if number in SPLIT and second_series else home
            order = "a" if number in SPLIT else "b"
            os.link(path, folders[target] / f"{order}{number:02d}-{path.name}")
    return folders


def _indexed(engine: Engine) -> int:
    with session_scope(engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _sending(engine: Engine, total: int) -> tuple[int, str] | None:
    """A job being sent with a part recorded and more than a batch still to go."""
    with session_scope(engine, readonly=True) as session:
        sent = (select(func.count()).where(ForwardItem.job_fk == ForwardJob.id,
                                           ForwardItem.state == ItemState.SENT)
                .correlate(ForwardJob).scalar_subquery())
        row = session.execute(
            select(ForwardJob.id, ForwardJob.lease_owner)
            .where(ForwardJob.state == JobState.SENDING, sent >= 1,
                   sent <= total - 2 * _COMMIT_EVERY)).first()
    return None if row is None else (int(row[0]), str(row[1]))


def _routed(engine: Engine) -> int:
    with session_scope(engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Study)
                                  .where(Study.routed_at.is_not(None))) or 0)


def _jobs(engine: Engine) -> list[ForwardJob]:
    with session_scope(engine, readonly=True) as session:
        return list(session.scalars(select(ForwardJob).order_by(ForwardJob.id)))


def _job_items(engine: Engine, job_id: int) -> dict[str, ItemState]:
    with session_scope(engine, readonly=True) as session:
        return {str(uid): ItemState(state) for uid, state in session.execute(
            select(ForwardItem.sop_instance_uid, ForwardItem.state)
            .where(ForwardItem.job_fk == job_id))}


def _orthanc_studies(pacs: Orthanc) -> dict[str, int]:
    """Instances Orthanc holds per Study Instance UID."""
    held = {}
    for orthanc_id in pacs.get("/studies"):
        study = pacs.get(f"/studies/{orthanc_id}")
        held[study["MainDicomTags"]["StudyInstanceUID"]] = len(
            pacs.get(f"/studies/{orthanc_id}/instances"))
    return held


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_nodes_forward_each_study_once_and_survive_a_kill_9_mid_job(
    serve: Callable[..., ServedNode], orthanc: Callable[..., Orthanc],
    cli: Callable[..., Result], db_url: str, tmp_path: Path
) -> None:
    studies = [make_clinic_study(tmp_path / "corpus" / f"study{number:02d}", series=2,
                                 per_series=PER_SERIES, rows=16, columns=16, seed=number,
                                 jpeg=False) for number in range(STUDIES)]
    folders = _spread(studies, tmp_path / "push")
    pacs = orthanc(count_received=True)
    shared = tmp_path / "shared"
    settings = {"DICOM_GATEWAY_FORWARD__POLL_SECONDS": "1",
                "DICOM_GATEWAY_FORWARD__FIRST_DELAY_SECONDS": "1",
                "DICOM_GATEWAY_FORWARD__MAX_DELAY_SECONDS": "2",
                "DICOM_GATEWAY_FORWARD__STABLE_AFTER_SECONDS": "30",
                "DICOM_GATEWAY_FORWARD__LEASE_SECONDS": str(LEASE_SECONDS)}
    # both start together on the empty database: the migrations must not collide
    nodes = [serve(data_dir=shared, wait=False, **settings,
                   DICOM_GATEWAY_STORAGE__SPOOL_DIR=str(tmp_path / f"spool-{name}"))
             for name in ("a", "b")]
    for node in nodes:
        wait_served(node)
    assert not (shared / "spool").exists(), "a node used the shared folder's spool"

    def gw(*args: str) -> Result:
        return cli(*args, DICOM_GATEWAY_DATABASE__URL=db_url,
                   DICOM_GATEWAY_STORAGE__DATA_DIR=str(shared))

    for command in (
        ["peer", "add", "institute", "--ae-title", pacs.ae_title, "--host", "127.0.0.1",
         "--port", str(pacs.dicom_port), "--role", "destination"],
        ["route", "add", "everything", "--to", "institute"],
    ):
        done = gw(*command)
        assert done.exit_code == 0, (command, done.output)

    _push(nodes, folders)
    assert len(list(folders[0].iterdir())) == len(list(folders[1].iterdir())) == 500
    engine = make_engine(db_url)
    try:
        wait_until(lambda: _indexed(engine) == 1000, timeout=300, what="1,000 instances indexed")
        leased: list[tuple[int, str]] = []

        def mid_job() -> bool:
            found = _sending(engine, 2 * PER_SERIES)
            if found is not None:
                leased.append(found)
            return found is not None

        wait_until(mid_job, timeout=300, what="a job half sent")
        job_id, owner = leased[0]
        [victim] = [n for n in nodes if owner.endswith(f":{n.process.pid}")]
        victim.kill()
        [survivor] = [n for n in nodes if n is not victim]
        [killed] = [j for j in _jobs(engine) if j.id == job_id]
        assert (killed.state, killed.lease_owner) == (JobState.SENDING, owner), (
            "the kill came after the job was finished")
        cut_off = _job_items(engine, job_id)

        # every study routed (1,000 instances are indexed), then no job left open
        wait_until(lambda: _routed(engine) == STUDIES and all(
            j.state not in (JobState.PENDING, JobState.SENDING) for j in _jobs(engine)),
            timeout=600, what="every job closed by the surviving node")
        jobs = _jobs(engine)
        items = {job.id: _job_items(engine, job.id) for job in jobs}
    finally:
        engine.dispose()

    space = KeyedPseudonyms(bytes.fromhex(TEST_KEY_HEX))
    expected = {space.uid(str(study.studies["CLINIC"])): {
        space.uid(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        for path in study.files.values()} for study in studies}
    split = {list(expected)[number] for number in SPLIT}  # in study order
    # every study whole at the institute
    assert _orthanc_studies(pacs) == {uid: len(sops) for uid, sops in expected.items()}
    # exactly one job per study and destination, each delivering all of it
    twice = {(uid, uid in split): [(JobKind(j.kind).value, len(items[j.id]))
                                   for j in jobs if j.study_instance_uid == uid]
             for uid in expected if sum(j.study_instance_uid == uid for j in jobs) != 1}
    assert not twice, f"not one job per study ((uid, split?): [(kind, items)]): {twice}"
    assert {(j.destination, j.kind, j.state) for j in jobs} == {
        ("institute", JobKind.INITIAL, JobState.DONE)}
    for job in jobs:
        assert set(items[job.id]) == expected[job.study_instance_uid], job.id
        assert set(items[job.id].values()) == {ItemState.SENT}, job.id
    # the killed job, half sent, was finished by the survivor in a later attempt
    assert ItemState.PENDING in cut_off.values() and ItemState.SENT in cut_off.values()
    [final] = [j for j in jobs if j.id == job_id]
    assert final.attempts >= 2
    assert re.search(rf"forward job={job_id} .*state=done", survivor.log.read_text()), (
        "the surviving node did not finish the killed node's job")
    # nothing twice, except what the killed node had sent and not yet recorded
    received = pacs.received()
    assert set(received) == set().union(*expected.values())
    repeated = {uid for uid, times in received.items() if times > 1}
    unrecorded = {uid for uid, state in cut_off.items() if state == ItemState.PENDING}
    assert repeated <= unrecorded, "an instance recorded as sent was sent again"
    assert len(repeated) <= _COMMIT_EVERY and max(received.values()) <= 2, repeated
    shutil.rmtree(tmp_path / "corpus")
