"""``serve`` with several receiving processes on one port (gateway.receivers, gateway.reuseport).

The kernel spreads connections over the processes; each answers what it
accepted, the spool and the database are all they share. A receiving child
killed is replaced and the node keeps receiving; a second node on the taken
port is refused with one line; stopping ``serve`` stops every child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from tests.conftest import require_tool, wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, indexed_count, is_alive

pytestmark = [pytest.mark.interop, pytest.mark.slow]  # several serve starts each: CI

PROCESSES = {"DICOM_GATEWAY_LISTENER__PROCESSES": "3"}


def _socket_owners(port: int) -> dict[int, int]:
    """For each established connection to local ``port``: the remote port -> the pid holding it.

    Read from /proc/net/tcp (the socket's inode) and /proc/PID/fd (who holds that inode).
    """
    inodes: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port:  # 01: ESTABLISHED
            inodes[f"socket:[{inode}]"] = int(remote.split(":")[1], 16)
    owners: dict[int, int] = {}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target in inodes:
            owners[inodes[target]] = int(fd.parts[2])
    return owners


def _ae() -> AE:
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    return ae


def test_associations_are_spread_over_the_receiving_processes(
        serve: Callable[..., ServedNode], tmp_path: Path) -> None:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=16, jpeg=False)
    node = serve(**PROCESSES)
    children = node.receiver_pids()
    assert len(children) == 2, f"expected two receiving children beside serve, found {children}"
    ae = _ae()
    associations = [ae.associate("127.0.0.1", node.port, ae_title="GATEWAY") for _ in range(16)]
    try:
        assert all(a.is_established for a in associations)
        ports = {a.dul.socket.socket.getsockname()[1]: a for a in associations}  # type: ignore
        owners = _socket_owners(node.port)
        served_by = {owners[port] for port in ports if port in owners}
        assert served_by <= {node.process.pid, *children}, (served_by, children)
        # 16 connections hashed over 3 sockets all on one: about 3 in 10 million
        assert len(served_by) >= 2, f"every association went to one process: {served_by}"
        statuses: list[int] = []
        lock = threading.Lock()

        def send(assoc: object, path: Path) -> None:
            status = assoc.send_c_store(dcmread(path))  # type: ignore[attr-defined]
            with lock:
                statuses.append(int(status.Status))

        threads = [threading.Thread(target=send, args=(a, p))
                   for a, p in zip(associations, sorted(study.files.values()), strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [0] * 16, [hex(s) for s in statuses]
    finally:
        for assoc in associations:
            assoc.release()
    wait_until(lambda: indexed_count(node.database_url) == 16, timeout=60,
               what="all 16 instances indexed, whichever process received them")


def test_a_receiving_process_killed_is_replaced_and_receiving_goes_on(
        serve: Callable[..., ServedNode], tmp_path: Path) -> None:
    study = make_clinic_study(tmp_path / "study", series=1, per_series=30, jpeg=False)
    node = serve(**PROCESSES)
    children = node.receiver_pids()
    assert len(children) == 2, children
    victim = children[0]
    folders = sorted((node.data_dir / "spool" / "receiving").glob("r*"))
    assert [f.name for f in folders] == ["r1", "r2"], folders
    for folder in folders:  # what a child killed mid-receive leaves in its own folder
        (folder / "partial.dcm").write_bytes(b"\0" * 128)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = node.receiver_pids()
        return len(now) == 2 and victim not in now

    wait_until(replaced, timeout=20, what="the killed receiver replaced")
    log = node.log.read_text()
    assert f"pid={victim} exited with -9: restarted, partial_receives=1" in log, log[-3000:]
    left = [f.name for f in folders if (f / "partial.dcm").exists()]
    assert len(left) == 1, f"only the dead child's folder is swept, the live one's kept: {left}"
    sent = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-aet", "CLINIC", "-aec", "GATEWAY", "-to", "30",
         "+sd", "127.0.0.1", str(node.port), str(study.root)],
        capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, check=False,
        timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_until(lambda: indexed_count(node.database_url) == 30, timeout=120,
               what="all 30 instances indexed after the replacement")


def test_a_second_node_on_the_taken_port_is_refused_in_one_line(
        serve: Callable[..., ServedNode], tmp_path: Path, db_url: str) -> None:
    """SO_REUSEPORT would let a second node share the port silently (gateway.reuseport)."""
    node = serve(**PROCESSES)
    program = Path(sys.executable).parent / "dicom-gateway"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    second = subprocess.run(
        [str(program), "serve", "--port", str(node.port), "--data-dir", str(tmp_path / "other"),
         "--database-url", db_url],
        capture_output=True, text=True, env={**env, **PROCESSES}, check=False, timeout=60)
    assert second.returncode == 1, second.stderr[-2000:]
    assert second.stderr.splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1 port {node.port}: Address already in use")
    assert "Traceback" not in second.stderr


def test_stopping_serve_stops_every_child(serve: Callable[..., ServedNode]) -> None:
    node = serve(**PROCESSES)
    children = node.receiver_pids() + node.worker_pids()
    assert len(children) >= 3, children
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    wait_until(lambda: not any(is_alive(pid) for pid in children), timeout=10,
               what="every receiving and ingest process gone")
    assert "gateway.serve: stopped" in node.log.read_text()


def test_ingest_workers_yield_the_cores_to_the_receiving_processes(
        serve: Callable[..., ServedNode]) -> None:
    """``ingest.nice`` is added to each worker's niceness; every receiving process keeps
    serve's, so that on busy cores a sender's next response comes first."""
    node = serve(**PROCESSES, DICOM_GATEWAY_INGEST__NICE="7")
    base = os.getpriority(os.PRIO_PROCESS, node.process.pid)
    wait_until(lambda: bool(node.worker_pids()), timeout=30, what="an ingest worker named")
    workers, receivers = node.worker_pids(), node.receiver_pids()
    assert receivers, "no receiving child"
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in workers} == {min(base + 7, 19)}
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in receivers} == {base}
