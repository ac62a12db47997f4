"""Interop fixtures: the node started as a user starts it (``dicom-gateway serve``), Orthanc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import func, select

from storage.db import make_engine, session_scope
from storage.models import Instance
from tests.conftest import TEST_KEY_HEX, require_tool
from tests.interop.orthanc import Orthanc, start_orthanc


@pytest.hookimpl(tryfirst=True)  # before ``-m "not slow"`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The PostgreSQL variant of every interop test is ``slow``.

    An interop test repeats one exchange with DCMTK or Orthanc through a
    ``serve`` process; on PostgreSQL it repeats it over the other database,
    which the integration tests already cover in every developer run. CI runs
    both variants; a developer's ``scripts/test`` keeps the SQLite one, which
    holds it under ten minutes on two cores.
    """
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.nodeid.startswith("tests/interop/") and params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedNode:
    """A ``dicom-gateway serve`` process and what a test needs to talk to it."""

    port: int
    data_dir: Path
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: BinaryIO

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def worker_pids(self) -> list[int]:
        """The node's ingest worker processes (named ``dg-ingest-N`` by gateway.workers)."""
        return self.children_named("dg-ingest-")

    def receiver_pids(self) -> list[int]:
        """The node's receiving children (``dg-receive-N``, gateway.receivers)."""
        return self.children_named("dg-receive-")

    def children_named(self, prefix: str) -> list[int]:
        found = []
        for pid in children_of(self.process.pid):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if name.startswith(prefix):
                found.append(pid)
        return found


def children_of(parent: int) -> list[int]:
    """Live child processes of ``parent``, from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def indexed_count(url: str) -> int:
    """How many instances the node's index holds (read through an engine of its own)."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return int(session.scalar(select(func.count()).select_from(Instance)) or 0)
    finally:
        engine.dispose()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a parent that never reaps it counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _echo_ok(port: int) -> bool:
    run = subprocess.run([require_tool("echoscu", "dcmtk"), "-aec", "GATEWAY", "-to", "2",
                          "127.0.0.1", str(port)], capture_output=True, check=False)
    return run.returncode == 0


def wait_served(node: ServedNode, timeout: float = 60) -> None:
    """Poll until the node answers C-ECHO; fail when it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while not _echo_ok(node.port):
        if node.process.poll() is not None:
            pytest.fail(f"serve exited with {node.process.returncode}: "
                        f"{node.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not answer C-ECHO within {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path: Path, db_url: str) -> Iterator[Callable[..., ServedNode]]:
    """Start ``dicom-gateway serve`` processes on free ports; stop them afterwards."""
    program = Path(sys.executable).parent / "dicom-gateway"
    processes: list[ServedNode] = []

    def start(data_dir: Path | None = None, port: int | None = None, wait: bool = True,
              **env: str) -> ServedNode:
        """Start a node; with ``wait=False`` return at once (then call ``wait_served``).

        One receiving process unless ``env`` asks for more: spreading connections is
        test_receivers.py's subject, and on a two-core machine each further process costs
        about 1.7 s of CPU to start, in every test that starts a node.
        """
        # ingest workers at niceness 0 unless a test asks: on a developer's two cores the test
        # runner's own processes would otherwise come before every ingest (gateway.workers)
        env = {"DICOM_GATEWAY_LISTENER__PROCESSES": "1", "DICOM_GATEWAY_INGEST__NICE": "0",
               **env}
        port = port or free_port()
        data_dir = data_dir or tmp_path / "var"
        log = tmp_path / f"serve-{len(processes)}.log"
        log_file = log.open("wb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
        environment.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX, **env})
        process = subprocess.Popen(
            [str(program), "serve", "--port", str(port), "--data-dir", str(data_dir),
             "--database-url", db_url],
            stdout=subprocess.DEVNULL, stderr=log_file, env=environment, cwd=tmp_path,
        )
        node = ServedNode(port, data_dir, db_url, process, log, log_file)
        processes.append(node)
        if wait:
            wait_served(node)
        return node

    yield start
    for node in processes:
        if node.process.poll() is None:
            node.process.terminate()
            try:
                node.process.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
        node.log_file.close()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """Start Orthanc processes on free loopback ports (see tests/interop/orthanc.py); stop them."""
    started: list[Orthanc] = []

    def start(modalities: dict[str, list[Any]] | None = None, **kwargs: Any) -> Orthanc:
        server = start_orthanc(tmp_path / f"orthanc{len(started)}", free_port(), free_port(),
                               modalities, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
