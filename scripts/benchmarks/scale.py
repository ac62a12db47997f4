"""Scale-out: three nodes on one PostgreSQL against one node, three senders each time.

One run, loopback only, the same CT files (512x512x16, about 0.5 MB each) as
the ingest benchmark. Three DCMTK ``storescu`` processes (``TCP_NODELAY=1``)
start together, each sending a third of the files:

- one node: all three to the same ``dicom-gateway serve``;
- three nodes: each to its own ``serve``; the three share one PostgreSQL
  database and one data folder, each with its own spool (README,
  "Deployment: several nodes").

Each round starts from an empty database (``public`` schema dropped and
migrated again) and empty folders; rounds alternate so that drift of a shared
machine hits both alike, and the median is kept. Acknowledged instances/s
come from the senders' wall time (what a clinic sees: the target is 1.5x one
node); de-identified and indexed instances/s are the count over the time
until the index holds all of them. The machine's cores are the ceiling of
the ratio. To show what limits it, the CPU time of each node (its process
and its ingest worker processes, ``/proc/PID/stat`` utime+stime, exited
children's cutime+cstime included) and of PostgreSQL (every ``postgres``
process) over each round is printed as a share of one core: Python at its
cores' worth with PostgreSQL low means the nodes are the limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmarks.ingest import (  # noqa: E402
    OUR_AE_TITLE,
    POLL_SECONDS,
    _Receiver,
    _send,
    _stop,
    _wait_for_echo,
)
from scripts.benchmarks.query_db import empty_schema, postgresql_bench_url  # noqa: E402
from storage.db import make_engine, session_scope  # noqa: E402
from tests.conftest import TEST_KEY_HEX, require_tool  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402
from tests.interop.conftest import children_of, free_port  # noqa: E402

SENDERS = 3
NODES = 3
TARGET = 1.5
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class _Node:
    receiver: _Receiver
    pid: int


@dataclass
class _Sample:
    acknowledged: float  # instances/s, senders' wall time
    indexed: float  # instances/s until the index holds them all
    node_cpu: list[float]  # each node's CPU over the round, in cores
    database_cpu: float  # PostgreSQL's, in cores


def _cpu_ticks(pid: int) -> int:
    """utime+stime of ``pid`` and of its children it has waited for (cutime+cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return sum(int(value) for value in fields[11:15])  # utime stime cutime cstime


def _tree_ticks(pid: int) -> int:
    """CPU ticks of a process and all its live descendants (the node's ingest workers)."""
    return _cpu_ticks(pid) + sum(_tree_ticks(child) for child in children_of(pid))


def _postgres_ticks() -> int:
    """CPU ticks of every ``postgres`` process (the server's backends and workers)."""
    total = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += _cpu_ticks(int(comm.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _start_node(root: Path, shared: Path, url: str, processes: int) -> _Node:
    """``dicom-gateway serve`` on a free port: the shared data folder, its own spool."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "serve.log"
    log_file = log.open("wb")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    environment.update(DICOM_GATEWAY_HMAC_KEY=TEST_KEY_HEX,
                       DICOM_GATEWAY_STORAGE__SPOOL_DIR=str(root / "spool"),
                       DICOM_GATEWAY_LISTENER__PROCESSES=str(processes))
    program = Path(sys.executable).parent / "dicom-gateway"
    process = subprocess.Popen(
        [str(program), "serve", "--port", str(port), "--data-dir", str(shared),
         "--database-url", url], stdout=subprocess.DEVNULL, stderr=log_file, env=environment,
        cwd=root)
    receiver = _Receiver(port, OUR_AE_TITLE, lambda: 0, lambda: _stop(process, log_file))
    try:
        _wait_for_echo(port, OUR_AE_TITLE, process, log)
    except BaseException:
        receiver.stop()
        raise
    return _Node(receiver, process.pid)


def _indexed(engine: Any) -> int:
    from sqlalchemy import func, select

    from storage.models import Instance

    with session_scope(engine, readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _round(nodes: int, storescu: str, folders: list[Path], count: int, url: str,
           root: Path, processes: int) -> _Sample:
    """Start ``nodes`` nodes on an empty database, send, wait until all is indexed."""
    empty_schema(url)
    started: list[_Node] = []
    engine = make_engine(url)
    try:
        # the first node migrates the empty database; the others find it current
        for index in range(nodes):
            started.append(_start_node(root / f"node{index}", root / "shared", url, processes))
        os.sync()
        targets = [started[index % nodes].receiver for index in range(SENDERS)]
        before = [_tree_ticks(node.pid) for node in started]
        database_before = _postgres_ticks()
        errors: list[BaseException] = []

        def send(folder: Path, target: _Receiver, logs: Path) -> None:
            try:
                _send(storescu, [folder], target, logs)
            except BaseException as exc:  # reported once all senders are through
                errors.append(exc)

        logs = [root / f"sender{index}" for index in range(SENDERS)]
        for folder in logs:
            folder.mkdir()
        threads = [threading.Thread(target=send, args=args)
                   for args in zip(folders, targets, logs)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        sent = time.perf_counter() - start
        deadline = time.perf_counter() + max(120.0, count * 0.5)
        while (held := _indexed(engine)) < count:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{nodes} node(s) indexed {held} of {count} instances")
            time.sleep(POLL_SECONDS)
        indexed = time.perf_counter() - start
        node_cpu = [(_tree_ticks(node.pid) - ticks) / TICKS / indexed
                    for node, ticks in zip(started, before)]
        database_cpu = (_postgres_ticks() - database_before) / TICKS / indexed
    finally:
        engine.dispose()
        for node in started:
            node.receiver.stop()
    shutil.rmtree(root, ignore_errors=True)
    return _Sample(count / sent, count / indexed, node_cpu, database_cpu)


def _thirds(files: list[Path], work: Path) -> list[Path]:
    """Three folders holding a third of the files each (hard links), in slice order."""
    folders = []
    size = -(-len(files) // SENDERS)
    for index in range(SENDERS):
        folder = work / f"third{index}"
        folder.mkdir()
        for path in files[index * size:(index + 1) * size]:
            os.link(path, folder / path.name)
        folders.append(folder)
    return folders


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench scale")
    parser.add_argument("-n", "--count", type=int, default=600, help="CT instances (default 600)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=0,
                        help="receiving processes per node, listener.processes (default 0: "
                             "one per core, the node's default; 1: the single-process node "
                             "whose interpreter lock the scale-out is meant to pass)")
    args = parser.parse_args(argv)
    if not 0 <= args.processes <= 64:
        parser.error("--processes must be 0-64")
    storescu = require_tool("storescu", "dcmtk")
    url = postgresql_bench_url()
    samples: dict[int, list[_Sample]] = {1: [], NODES: []}
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        files = make_ct_series(work / "in", args.count)
        for path in files:  # warm the page cache so every sender reads from memory
            path.read_bytes()
        folders = _thirds(files, work)
        for repeat in range(args.repeats):
            for nodes in (1, NODES):
                samples[nodes].append(_round(nodes, storescu, folders, args.count, url,
                                             work / f"r{repeat}-{nodes}", args.processes))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count() or 1
    acknowledged = {n: statistics.median(s.acknowledged for s in v) for n, v in samples.items()}
    indexed = {n: statistics.median(s.indexed for s in v) for n, v in samples.items()}
    print(f"scale: {args.count} CT instances 512x512x16 from {SENDERS} DCMTK storescu at once "
          f"over loopback, one PostgreSQL; median of {args.repeats} interleaved rounds; "
          f"{cores} cores; listener.processes={args.processes or 'one per core'}")
    print("| nodes | acknowledged/s | indexed/s | CPU of each node (cores) "
          "| CPU of PostgreSQL (cores) |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for nodes, values in samples.items():
        each = [statistics.median(s.node_cpu[i] for s in values) for i in range(nodes)]
        database = statistics.median(s.database_cpu for s in values)
        print(f"| {nodes} | {acknowledged[nodes]:.0f} | {indexed[nodes]:.0f} "
              f"| {', '.join(f'{c:.2f}' for c in each)} | {database:.2f} |")
    ratio = acknowledged[NODES] / acknowledged[1]
    print(f"acknowledged {NODES} nodes / 1 node = {ratio:.2f}x (target >= {TARGET:.1f}x, "
          f"ceiling {cores}x on {cores} cores)")
    print(f"indexed {NODES} nodes / 1 node = {indexed[NODES] / indexed[1]:.2f}x")
    return 0 if ratio >= TARGET else 1
