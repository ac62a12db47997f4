"""kill -9 of the node while DCMTK storescu sends 300 instances, then a restart.

Durability contract 1 and 2 (RELIABILITY I1, T26): every instance the node
answered 0x0000 is in the index after the restart, exactly once; the spool
drains; nothing is half-written.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from anonymizer import KeyedPseudonyms
from storage.db import make_engine, session_scope
from storage.models import Instance
from tests.conftest import TEST_KEY_HEX, require_tool, wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, is_alive

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _indexed_uids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return [str(uid) for uid in session.scalars(select(Instance.sop_instance_uid))]
    finally:
        engine.dispose()


def test_kill_9_while_receiving_loses_no_acknowledged_instance(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=3, per_series=100, jpeg=False)
    node = serve(DICOM_GATEWAY_LISTENER__PROCESSES="2")  # the receiving child dies too
    sender = subprocess.Popen(
        [require_tool("storescu", "dcmtk"), "-v", "-nh", "-aet", "CLINIC", "-aec", "GATEWAY",
         "+sd", "127.0.0.1", str(node.port), str(study.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    workers = node.worker_pids()
    assert workers, "serve started no ingest worker process"
    workers += node.receiver_pids()
    assert len(workers) >= 2, workers
    log: list[str] = []
    assert sender.stdout is not None
    for line in sender.stdout:  # kill the node once a hundred instances were acknowledged
        log.append(line)
        if sum("Received Store Response (Success)" in x for x in log) >= 100:
            node.kill()
            break
    rest, _ = sender.communicate(timeout=120)
    log.append(rest)
    # which files were answered Success: each "Sending file" is followed by its response
    acknowledged: list[str] = []
    current: str | None = None
    for line in "".join(log).splitlines():
        sending = re.search(r"Sending file: (.+)$", line)
        if sending:
            current = sending.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(current)
            current = None
    assert 100 <= len(acknowledged) < 300, "the kill did not land mid-transfer"
    # the workers die with the node, so none races the restarted node's start-up repair
    wait_until(lambda: not any(is_alive(pid) for pid in workers), timeout=10,
               what="the ingest and receiving processes gone with the killed node")
    restarted = serve(data_dir=node.data_dir)
    space = KeyedPseudonyms(bytes.fromhex(TEST_KEY_HEX))
    expected = {space.uid(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
                for path in acknowledged}
    wait_until(lambda: expected <= set(_indexed_uids(restarted.database_url)), timeout=180,
               what="every acknowledged instance indexed after the restart")
    indexed = _indexed_uids(restarted.database_url)
    assert len(indexed) == len(set(indexed)), "an instance was indexed twice"
    spool = node.data_dir / "spool"
    wait_until(lambda: not list((spool / "incoming").glob("*")), timeout=60, what="spool drained")
    stored = list((node.data_dir / "store").rglob("*.dcm"))
    assert len(stored) == len(indexed), "files and index rows differ"


def _storescu(node: ServedNode, folder: Path) -> None:
    sent = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-aet", "CLINIC", "-aec", "GATEWAY",
         "-to", "30", "+sd", "127.0.0.1", str(node.port), str(folder)],
        capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, check=False,
        timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr


def test_a_worker_process_that_dies_is_replaced_and_its_claim_redone(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=40, jpeg=False)
    node = serve(DICOM_GATEWAY_INGEST__WORKERS="2")
    first = node.worker_pids()
    assert len(first) == 2, f"expected two ingest worker processes, found {first}"
    os.kill(first[0], signal.SIGKILL)
    _storescu(node, study.root)
    wait_until(lambda: len(_indexed_uids(node.database_url)) == 40, timeout=120,
               what="all 40 instances indexed by the replacement workers")
    # the replacements are named once their interpreter is up (gateway.workers)
    wait_until(lambda: len(set(node.worker_pids()) - set(first)) == 2, timeout=30,
               what=f"two new ingest workers in place of {first}: {node.worker_pids()}")
    log = node.log.read_text()
    assert f"ingest worker pid={first[0]} exited with -9" in log, log[-2000:]
    assert not list((node.data_dir / "spool" / "claimed").glob("*.dcm")), "a claim was left"


def test_a_worker_killed_while_idle_stops_neither_receiving_nor_shutdown(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    """A worker killed while it waits for work (the common case) must not wedge the node.

    Regression: idle workers used to sleep on a shared ``multiprocessing.Event``;
    one killed in its wait left the event's ``set()`` blocked for ever, in the
    C-STORE handler (the next store never got its response) and in the supervisor
    (the node never stopped). Now each worker has a doorbell pipe of its own.
    """
    before = make_clinic_study(tmp_path / "before", series=1, per_series=10, jpeg=False)
    after = make_clinic_study(tmp_path / "after", series=1, per_series=10, jpeg=False, seed=7)
    node = serve(DICOM_GATEWAY_INGEST__WORKERS="2")
    _storescu(node, before.root)
    wait_until(lambda: len(_indexed_uids(node.database_url)) == 10, timeout=60,
               what="the first study indexed")
    idle = node.worker_pids()
    assert len(idle) == 2, idle
    os.kill(idle[0], signal.SIGKILL)
    wait_until(lambda: f"ingest worker pid={idle[0]} exited with -9" in node.log.read_text(),
               timeout=30, what="the supervisor noticing the dead worker")
    _storescu(node, after.root)  # every C-STORE rings the doorbell
    wait_until(lambda: len(_indexed_uids(node.database_url)) == 20, timeout=60,
               what="the second study indexed by the replacement workers")
    node.process.terminate()
    try:
        code = node.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("serve did not stop within 30 s of SIGTERM after a worker was replaced")
    assert code == 0, node.log.read_text()[-2000:]
