"""kill -9 of a served node at random moments while DCMTK storescu sends, looped (T26).

Shared by ``scripts/bench crashloop`` (200 kills) and
``tests/interop/test_crashloop.py`` (a few). RELIABILITY.md I1 and T26,
ARCHITECTURE.md durability contract 1-3.

The node is started as a user starts it (``dicom-gateway serve``, in a
process group of its own: a kill of the group takes the ingest workers
with it, as their ``PR_SET_PDEATHSIG`` would) with one destination, a DCMTK
``storescp`` sink writing one file per C-STORE it receives (``+uf``, so a
repeat is a second file, not an overwrite), and a route sending everything
there as soon as a study is stable. Senders run ``storescu -v`` over and
over with fresh studies, a pause between runs; its output says which files were answered Success
(acknowledged) and which were sent without an answer. Each cycle starts the
node and kills the group after a delay drawn uniformly from
``[0, max_delay)`` seconds, counted from the moment the node logs its
configuration (before that it only imports its modules and reads its
settings, and touches no data; on a loaded machine that alone can take
seconds), so kills land during start-up repair and migration, while
receiving, ingesting and forwarding. After the last kill the
senders stop, the node runs until the spool is empty and no job is open,
and the checks are:

- every acknowledged instance is indexed (its SOP Instance UID remapped
  with the node's key, as the node remaps it), once;
- every indexed instance reached the sink, and is queued to it once (the
  idempotency key: one forward item per instance and destination);
- no instance reached the sink twice from one life of the node. A node
  killed after the sink stored an instance but before it committed the
  outcome sends that instance again after the restart (durability contract
  3: outcomes are committed every few instances, and a receiver keeps one
  copy per SOP Instance UID). Those repeats are counted apart, and checked
  against that window: a repeat needs a kill between the two copies, and
  one kill explains at most :data:`IN_FLIGHT` of them.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import func, select

from anonymizer import KeyedPseudonyms
from gateway.forwarder import _COMMIT_EVERY
from storage.db import make_engine, session_scope
from storage.models import Instance, Study
from storage.queue_models import OPEN_STATES, ForwardItem, ForwardJob
from tests.conftest import TEST_KEY_HEX, require_tool
from tests.corpus import make_clinic_study
from tests.interop.conftest import free_port

__all__ = ["IN_FLIGHT", "LoopResult", "count_repeats", "run_crashloop"]

#: the most instances one kill may leave delivered but not recorded (gateway.forwarder)
IN_FLIGHT = _COMMIT_EVERY
#: the node's clock made quick, so that a life of a few seconds routes and forwards
NODE_ENV = {"DICOM_GATEWAY_FORWARD__POLL_SECONDS": "1",
            "DICOM_GATEWAY_FORWARD__FIRST_DELAY_SECONDS": "1",
            "DICOM_GATEWAY_FORWARD__MAX_DELAY_SECONDS": "2",
            "DICOM_GATEWAY_FORWARD__STABLE_AFTER_SECONDS": "1",
            "DICOM_GATEWAY_FORWARD__LEASE_SECONDS": "10"}
_ROOT = Path(__file__).resolve().parents[1]
_SUCCESS = "Received Store Response (Success)"
_SENDING = re.compile(r"Sending file: (.+)$")


@dataclass
class LoopResult:
    """What a loop did and found; ``violations`` is empty when I1 and T26 held."""

    kills: int = 0
    kills_before_listening: int = 0
    lives_indexing: int = 0
    lives_forwarding: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    indexed: int = 0
    acknowledged_indexed: int = 0
    unacknowledged_stored: int = 0
    forwarded: int = 0
    received_by_sink: int = 0
    resent_after_kill: int = 0
    most_resent_per_kill: int = 0
    duplicates: int = 0
    quarantined: int = 0
    #: lives that ended at their chosen step (tests/crashpoint.py), by step
    aimed: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"kills: {self.kills} ({self.kills_before_listening} before the node listened; "
            f"{self.lives_indexing} in lives that indexed, {self.lives_forwarding} in lives "
            "that forwarded)",
            *([f"aimed: {', '.join(f'{k} {v}' for k, v in sorted(self.aimed.items()))}"]
              if self.aimed else []),
            f"acknowledged: {self.acknowledged} (sent but not acknowledged: "
            f"{self.unacknowledged})",
            f"indexed: {self.indexed} ({self.acknowledged_indexed} of the acknowledged; "
            f"unacknowledged-but-stored: {self.unacknowledged_stored}; "
            f"quarantined: {self.quarantined})",
            f"forwarded: {self.forwarded} distinct instances at the sink, in "
            f"{self.received_by_sink} C-STOREs",
            f"re-sent after a kill (delivered, outcome not yet committed): "
            f"{self.resent_after_kill} (at most {self.most_resent_per_kill} for one kill; "
            f"window {IN_FLIGHT})",
            f"duplicates (sent twice by one life, or queued twice): {self.duplicates}",
            f"violations: {len(self.violations)}",
            *(f"  {v}" for v in self.violations[:20]),
        ]


class _Studies:
    """Fresh studies to send, made on demand (thread-safe)."""

    def __init__(self, root: Path, seed: int, per_study: int) -> None:
        self._root, self._seed, self._per_study = root, seed, per_study
        self._lock = threading.Lock()
        self._made = 0

    def next(self) -> list[Path]:
        with self._lock:
            number = self._made
            self._made += 1
        corpus = make_clinic_study(self._root / f"{number:05d}", series=1,
                                   per_series=self._per_study, jpeg=False,
                                   seed=self._seed * 1_000_000 + number)
        return sorted(path.absolute() for path in corpus.files.values())


@dataclass
class _Ledger:
    """What the senders know: the files answered Success, and those sent without it."""

    acknowledged: set[Path] = field(default_factory=set)
    attempted: set[Path] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _storescu(port: int, files: list[Path]) -> tuple[set[Path], set[Path]]:
    """One storescu run; the files it sent and those of them answered Success."""
    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-v", "-nh", "-aet", "CLINIC", "-aec", "GATEWAY",
         "-to", "5", "-ta", "10", "-td", "20", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, check=False,
        timeout=120)
    sent: set[Path] = set()
    acknowledged: set[Path] = set()
    current: Path | None = None
    for line in (run.stdout + run.stderr).splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = Path(sending.group(1).strip())
            sent.add(current)
        elif _SUCCESS in line and current is not None:
            acknowledged.add(current)
            current = None
    return sent, acknowledged


def _send(port: int, studies: _Studies, ledger: _Ledger, stop: threading.Event,
          pause: float) -> None:
    """A sender: fresh studies, one storescu run after another; unsent files go again.

    ``pause`` between runs keeps the senders from outrunning ingest, which
    on a loaded machine gets only the end of each short life.
    """
    batch: list[Path] = []
    while not stop.is_set():
        batch = batch or studies.next()
        sent, acknowledged = _storescu(port, batch)
        with ledger.lock:
            ledger.attempted |= sent
            ledger.acknowledged |= acknowledged
        batch = [path for path in batch if path not in sent]  # never sent: not yet tried
        stop.wait(pause if sent else 0.1)  # else the node is down or starting


@dataclass
class _Node:
    """How to start ``dicom-gateway serve`` again and again on one port and data folder."""

    work: Path
    port: int
    database_url: str
    env: dict[str, str]

    def start(self, life: int, crashpoint: str = "") -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``serve``; with ``crashpoint`` (``STEP:N``) it kills itself there
        (tests/crashpoint.py)."""
        log = self.work / "logs" / f"serve-{life:04d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        program = [str(Path(sys.executable).parent / "dicom-gateway")]
        env = self.env
        if crashpoint:
            program = [sys.executable, "-m", "tests.crashpoint"]
            env = {**env, "CRASHPOINT": crashpoint, "PYTHONPATH": str(_ROOT)}
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [*program, "serve", "--port", str(self.port), "--data-dir",
                 str(self.work / "var"), "--database-url", self.database_url],
                stdout=subprocess.DEVNULL, stderr=handle, env=env, cwd=self.work,
                start_new_session=True)  # its own process group: the workers die with it
        return process, log

    def cli(self, *args: str) -> None:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "dicom-gateway"), *args], capture_output=True,
            text=True, check=False, cwd=self.work,
            env={**self.env, "DICOM_GATEWAY_DATABASE__URL": self.database_url,
                 "DICOM_GATEWAY_STORAGE__DATA_DIR": str(self.work / "var")})
        if run.returncode != 0:
            raise RuntimeError(f"dicom-gateway {' '.join(args)}: {run.stderr.strip()[-500:]}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def _sink(work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    folder = work / "sink"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (work / "sink.log").open("wb")
    process = subprocess.Popen(
        [require_tool("storescp", "dcmtk"), "-aet", "SINK", "+uf", "-od", str(folder),
         str(port)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process, port, folder


def _wait(predicate: Callable[[], bool], timeout: float, what: str,
          poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _count(url: str, model: type[Instance]) -> int:
    engine = make_engine(url)
    try:
        with session_scope(engine, readonly=True) as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def run_crashloop(work: Path, *, kills: int, seed: int, database_url: str | None = None,
                  max_delay: float = 15.0, senders: int = 1, per_study: int = 10,
                  pause: float = 3.0,
                  settle_timeout: float = 300.0,
                  environment: dict[str, str] | None = None,
                  points: Sequence[str] = (),
                  progress: Callable[[str], None] | None = None) -> LoopResult:
    """Kill and restart a served node ``kills`` times while storescu sends; check I1 and T26.

    Parameters
    ----------
    work : Path
        An empty folder for the node's data, the sink, the studies and logs.
    kills : int
        How many times the node's process group gets SIGKILL.
    seed : int
        Seeds the kill delays and the studies' UIDs.
    database_url : str, optional
        An empty database; SQLite in ``work`` by default.
    max_delay : float
        Each kill comes ``uniform(0, max_delay)`` seconds after the node logged its
        configuration.
    environment : dict, optional
        More ``DICOM_GATEWAY_*`` settings for the node (``listener.processes``, say).
    points : sequence of str, optional
        Steps of tests/crashpoint.py (``written``, ``durable``, ``committed``, ``sent``),
        taken in turn: each life kills itself the N-th time (N drawn from 1-3) one of its
        processes reaches its step, or is killed after ``max_delay`` seconds if it never
        does. Without them the kills come at random moments.
    """
    work.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{(work / 'gateway.sqlite3').as_posix()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX, **NODE_ENV, **(environment or {})})
    node = _Node(work, free_port(), url, env)
    sink, sink_port, sink_folder = _sink(work)
    result = LoopResult()
    lives: list[tuple[int, int]] = []  # (start, kill) in time.time_ns()
    ledger, stop = _Ledger(), threading.Event()
    studies = _Studies(work / "studies", seed, per_study)
    threads = [threading.Thread(target=_send, args=(node.port, studies, ledger, stop, pause),
                                name=f"sender-{n}", daemon=True) for n in range(senders)]
    rng = random.Random(seed)
    before = 0
    try:
        node.cli("peer", "add", "sink", "--ae-title", "SINK", "--host", "127.0.0.1",
                 "--port", str(sink_port), "--role", "destination", "--schedule", "immediate")
        node.cli("route", "add", "everything", "--to", "sink")
        for thread in threads:
            thread.start()
        for life in range(kills):
            step = points[life % len(points)] if points else ""
            process, log = node.start(life, f"{step}:{rng.randint(1, 3)}" if step else "")
            started = time.time_ns()
            _wait(lambda: log.stat().st_size > 0 or process.poll() is not None, 120,
                  "serve to load its configuration", poll=0.02)
            if step:  # it dies at its step; a life that never gets there is killed anyway
                try:
                    code = process.wait(max_delay)
                except subprocess.TimeoutExpired:
                    code = None
                if code == -signal.SIGKILL:
                    result.aimed[step] += 1
                elif code is not None:
                    result.violations.append(f"life {life}: serve exited {code} before its "
                                             f"step {step} (see {log.name})")
            else:
                time.sleep(rng.uniform(0.0, max_delay))
            _kill_group(process)
            lives.append((started, time.time_ns()))
            result.kills += 1
            if b"listening as" not in log.read_bytes():
                result.kills_before_listening += 1
            indexed = _count(url, Instance)
            result.lives_indexing += indexed > before
            before = indexed
            if progress and (life + 1) % 10 == 0:
                with ledger.lock:
                    count = len(ledger.acknowledged)
                progress(f"crashloop: {life + 1}/{kills} kills, {count} acknowledged")
        stop.set()
        for thread in threads:
            thread.join(180)
        process, _ = node.start(kills)
        try:
            _wait(lambda: _settled(url, work / "var" / "spool"), settle_timeout,
                  "the node to settle (spool empty, every study routed, no open job)")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                _kill_group(process)
    finally:
        stop.set()
        sink.terminate()
        sink.wait(30)
    _check(result, url, work, ledger, _received(sink_folder), lives)
    return result


def _settled(url: str, spool: Path) -> bool:
    if any(any((spool / folder).glob("*.dcm")) for folder in ("incoming", "claimed")):
        return False
    engine = make_engine(url)
    try:
        with session_scope(engine, readonly=True) as session:
            unrouted = session.scalar(select(func.count()).select_from(Study)
                                      .where(Study.routed_at.is_(None)))
            open_jobs = session.scalar(select(func.count()).select_from(ForwardJob)
                                       .where(ForwardJob.state.in_(OPEN_STATES)))
    finally:
        engine.dispose()
    return unrouted == 0 and open_jobs == 0


def _received(folder: Path) -> list[tuple[str, int]]:
    """Every C-STORE the sink received: (SOP Instance UID, when its file was written)."""
    found = []
    for path in folder.iterdir():
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        found.append((str(ds.SOPInstanceUID), path.stat().st_mtime_ns))
    return sorted(found, key=lambda item: item[1])


def _remapped(paths: set[Path]) -> set[str]:
    space = KeyedPseudonyms(bytes.fromhex(TEST_KEY_HEX))
    return {space.uid(str(dcmread(path, stop_before_pixels=True,
                                  specific_tags=["SOPInstanceUID"]).SOPInstanceUID))
            for path in paths}


def _check(result: LoopResult, url: str, work: Path, ledger: _Ledger,
           received: list[tuple[str, int]], lives: list[tuple[int, int]]) -> None:
    acknowledged = _remapped(ledger.acknowledged)
    unacknowledged = _remapped(ledger.attempted - ledger.acknowledged)
    engine = make_engine(url)
    try:
        with session_scope(engine, readonly=True) as session:
            rows = [str(uid) for uid in session.scalars(select(Instance.sop_instance_uid))]
            queued = Counter(str(uid) for uid in session.scalars(
                select(ForwardItem.sop_instance_uid)))
    finally:
        engine.dispose()
    indexed = set(rows)
    result.acknowledged, result.unacknowledged = len(acknowledged), len(unacknowledged)
    result.indexed = len(indexed)
    result.acknowledged_indexed = len(acknowledged & indexed)
    result.unacknowledged_stored = len(unacknowledged & indexed)
    result.quarantined = len(list((work / "var" / "spool" / "quarantine").glob("*.dcm")))
    result.received_by_sink = len(received)
    copies = Counter(uid for uid, _ in received)
    result.forwarded = len(copies)
    result.lives_forwarding = sum(1 for start, end in lives
                                  if any(start <= when < end for _, when in received))
    problems = result.violations
    if len(rows) != len(indexed):
        problems.append(f"{len(rows) - len(indexed)} instance(s) indexed twice")
    if missing := acknowledged - indexed:
        problems.append(f"{len(missing)} acknowledged instance(s) not indexed, "
                        f"e.g. {sorted(missing)[0]}")
    stored = len(list((work / "var" / "store").rglob("*.dcm")))
    if stored != len(indexed):
        problems.append(f"{stored} stored file(s) for {len(indexed)} indexed instance(s)")
    if unsent := indexed - set(copies):
        problems.append(f"{len(unsent)} indexed instance(s) never forwarded, "
                        f"e.g. {sorted(unsent)[0]}")
    if twice := {uid for uid, n in queued.items() if n > 1}:
        result.duplicates += len(twice)
        problems.append(f"{len(twice)} instance(s) queued twice to the sink")
    count_repeats(result, received, [end for _, end in lives])


def count_repeats(result: LoopResult, received: list[tuple[str, int]], kills: list[int]) -> None:
    """Count the sink's second copies of an instance into ``result``.

    A copy received after a kill that came after the previous copy is a
    repeat of an instance in flight at that kill (``resent_after_kill``);
    one without a kill in between was sent twice by one life of the node (a
    duplicate, a violation), and so are more than :data:`IN_FLIGHT` repeats
    after one kill.

    Parameters
    ----------
    received : list of (str, int)
        Every C-STORE the sink received: SOP Instance UID and when, in
        ``time.time_ns()``, in order of time.
    kills : list of int
        When each kill happened, in the same clock.
    """
    last: dict[str, int] = {}
    per_kill: Counter[int] = Counter()
    for uid, when in received:
        before = last.get(uid)
        last[uid] = when
        if before is None:
            continue
        explaining = [kill for kill in kills if before <= kill < when]
        if explaining:
            result.resent_after_kill += 1
            per_kill[explaining[0]] += 1
        else:
            result.duplicates += 1
            result.violations.append(f"instance {uid} reached the sink twice from one life")
    result.most_resent_per_kill = max(per_kill.values(), default=0)
    if result.most_resent_per_kill > IN_FLIGHT:
        result.violations.append(f"one kill was followed by {result.most_resent_per_kill} "
                                 f"repeats, more than the {IN_FLIGHT} a kill can leave "
                                 "unrecorded")
