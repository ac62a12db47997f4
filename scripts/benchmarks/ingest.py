"""Ingest over DICOM: our node against a bare pynetdicom Storage SCP, Orthanc beside it.

One run, loopback only, the same CT files (512x512x16, about 0.5 MB each)
for every receiver. DCMTK ``storescu`` (with ``TCP_NODELAY=1``) sends them,
once over one association and once from four ``storescu`` processes started
together, each sending a quarter. Each receiver is started fresh for each
round (an empty folder, an empty index); the rounds interleave receivers so
that drift of a shared machine hits all alike, and the median is kept:

- bare pynetdicom: a Storage SCP that only writes ``event.encoded_dataset()``
  to a file and answers Success (pynetdicom's defaults otherwise, plus
  TCP_NODELAY on the accepted socket, so the floor is not Nagle's);
- ours: ``dicom-gateway serve`` with SQLite. Acknowledged instances/s come
  from the senders' wall time; de-identified and indexed instances/s are the
  count over the time from the first sender's start until the index holds
  all of them (the SQLite file polled read-only every 50 ms);
- Orthanc: its defaults with its SQLite index. It answers a C-STORE after
  storing and indexing, so its acknowledged rate is its indexed rate.

The C-ECHO round trip (associate, echo, release) is measured in this process
with a pynetdicom SCU, TCP_NODELAY on its socket: starting ``echoscu`` 50 times
would mostly measure process start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import TEST_KEY_HEX, require_tool  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402
from tests.interop.conftest import free_port  # noqa: E402
from tests.interop.orthanc import start_orthanc  # noqa: E402

OUR_AE_TITLE = "GATEWAY"
BARE_AE_TITLE = "BARE"
SENDERS = (1, 4)
ECHO_ROUNDS = 50
POLL_SECONDS = 0.05
ACKNOWLEDGED_TARGET = 0.90
INDEXED_TARGET = 0.50

BARE_SCP = '''\
import socket, sys
from pathlib import Path
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

port, out = int(sys.argv[1]), Path(sys.argv[2])

def on_open(event):
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

def on_store(event):
    (out / (event.request.AffectedSOPInstanceUID + ".dcm")).write_bytes(event.encoded_dataset())
    return 0x0000

ae = AE(ae_title="BARE")
ae.maximum_associations = 16
ae.add_supported_context(Verification)
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
ae.start_server(("127.0.0.1", port), block=True,
                evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_STORE, on_store)])
'''


@dataclass
class _Receiver:
    """One started receiver: where to send, how many it holds, how to stop it."""

    port: int
    ae_title: str
    stored: Callable[[], int]
    stop: Callable[[], None]


@dataclass
class _Sample:
    acknowledged: float  # instances/s, senders' wall time
    indexed: float  # instances/s until all are de-identified and indexed (ours only)


def _nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _echo_ms(ae: AE, port: int, ae_title: str) -> float:
    """Associate, C-ECHO, release: milliseconds, or an error when any step fails."""
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise ConnectionError(f"no association with {ae_title} on port {port}")
    status = assoc.send_c_echo()
    assoc.release()
    elapsed = (time.perf_counter() - start) * 1000
    if not status or status.Status != 0x0000:
        raise ConnectionError(f"C-ECHO to {ae_title} on port {port} failed")
    return elapsed


def _echo_ae() -> AE:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    return ae


def _wait_for_echo(port: int, ae_title: str, process: subprocess.Popen[bytes], log: Path) -> None:
    ae = _echo_ae()
    deadline = time.monotonic() + 60
    while True:
        try:
            _echo_ms(ae, port, ae_title)
            return
        except ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(f"{ae_title} exited with {process.returncode}: "
                                   f"{log.read_text(errors='replace')[-2000:]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ae_title} did not answer C-ECHO within 60 s") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], log_file: Any) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    log_file.close()


def _start_bare(root: Path) -> _Receiver:
    out = root / "received"
    out.mkdir(parents=True)
    script = root / "bare_scp.py"
    script.write_text(BARE_SCP)
    port = free_port()
    log = root / "bare.log"
    log_file = log.open("wb")
    process = subprocess.Popen([sys.executable, str(script), str(port), str(out)],
                               stdout=log_file, stderr=subprocess.STDOUT, cwd=root)
    receiver = _Receiver(port, BARE_AE_TITLE, lambda: sum(1 for _ in out.iterdir()),
                         lambda: _stop(process, log_file))
    try:
        _wait_for_echo(port, BARE_AE_TITLE, process, log)
    except BaseException:
        receiver.stop()
        raise
    return receiver


def _indexed(database: Path) -> int:
    """Instances in the node's index, read through a read-only connection."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return int(connection.execute("SELECT count(*) FROM instance").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or busy for a moment
        return 0


def _start_ours(root: Path) -> _Receiver:
    data_dir = root / "var"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "serve.log"
    log_file = log.open("wb")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_GATEWAY_")}
    environment["DICOM_GATEWAY_HMAC_KEY"] = TEST_KEY_HEX
    program = Path(sys.executable).parent / "dicom-gateway"
    process = subprocess.Popen(
        [str(program), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=log_file, env=environment, cwd=root)
    database = data_dir / "gateway.sqlite3"
    receiver = _Receiver(port, OUR_AE_TITLE, lambda: _indexed(database),
                         lambda: _stop(process, log_file))
    try:
        _wait_for_echo(port, OUR_AE_TITLE, process, log)
    except BaseException:
        receiver.stop()
        raise
    return receiver


def _start_orthanc(root: Path) -> _Receiver:
    orthanc = start_orthanc(root, free_port(), free_port())

    def stored() -> int:
        return int(orthanc.get("/statistics")["CountInstances"])

    return _Receiver(orthanc.dicom_port, orthanc.ae_title, stored, orthanc.stop)


def _quarters(files: list[Path], work: Path) -> list[Path]:
    """Four folders holding a quarter of the files each (hard links), in slice order."""
    folders = []
    size = -(-len(files) // 4)
    for index in range(4):
        folder = work / f"quarter{index}"
        folder.mkdir()
        for path in files[index * size:(index + 1) * size]:
            os.link(path, folder / path.name)
        folders.append(folder)
    return folders


def _send(storescu: str, folders: list[Path], receiver: _Receiver, logs: Path) -> float:
    """Start one ``storescu`` per folder together; seconds until the last one exits."""
    environment = {**os.environ, "TCP_NODELAY": "1"}
    log_files = [(logs / f"storescu{index}.log").open("wb") for index in range(len(folders))]
    start = time.perf_counter()
    processes = [
        subprocess.Popen([storescu, "-aec", receiver.ae_title, "+sd", "127.0.0.1",
                          str(receiver.port), str(folder)],
                         stdout=log, stderr=subprocess.STDOUT, env=environment)
        for folder, log in zip(folders, log_files)
    ]
    for process in processes:
        process.wait()
    elapsed = time.perf_counter() - start
    for log in log_files:
        log.close()
    for index, process in enumerate(processes):
        if process.returncode != 0:
            text = (logs / f"storescu{index}.log").read_text(errors="replace")
            raise RuntimeError(f"storescu to {receiver.ae_title} exited with "
                               f"{process.returncode}: {text[-2000:]}")
    return elapsed


def _wait_stored(receiver: _Receiver, count: int, start: float, timeout: float) -> float:
    """Seconds from ``start`` until the receiver holds ``count`` instances (polled)."""
    deadline = time.perf_counter() + timeout
    while (held := receiver.stored()) < count:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{receiver.ae_title} holds {held} of {count} instances "
                               f"{timeout:.0f} s after the senders finished")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - start


def _round(name: str, start_receiver: Callable[[Path], _Receiver], storescu: str,
           folders: list[Path], count: int, root: Path) -> _Sample:
    root.mkdir(parents=True)
    receiver = start_receiver(root)
    try:
        os.sync()  # no round pays for the previous one's dirty pages
        start = time.perf_counter()
        sent = _send(storescu, folders, receiver, root)
        indexed = _wait_stored(receiver, count, start, timeout=max(120.0, count * 0.5))
    finally:
        receiver.stop()
    shutil.rmtree(root, ignore_errors=True)
    # bare and Orthanc hold every instance once storescu has its answers
    return _Sample(count / sent, count / (indexed if name == "ours" else sent))


def _echo_medians(work: Path) -> tuple[float, float]:
    """Median C-ECHO round trips (ms) against our node and Orthanc, interleaved."""
    ours = _start_ours(work / "echo-ours")
    orthanc: _Receiver | None = None
    try:
        orthanc = _start_orthanc(work / "echo-orthanc")
        ae = _echo_ae()
        samples: dict[str, list[float]] = {"ours": [], "orthanc": []}
        for index in range(ECHO_ROUNDS + 3):  # three warm-up rounds
            for name, receiver in (("ours", ours), ("orthanc", orthanc)):
                elapsed = _echo_ms(ae, receiver.port, receiver.ae_title)
                if index >= 3:
                    samples[name].append(elapsed)
    finally:
        ours.stop()
        if orthanc is not None:
            orthanc.stop()
    return statistics.median(samples["ours"]), statistics.median(samples["orthanc"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench ingest")
    parser.add_argument("-n", "--count", type=int, default=500, help="CT instances (default 500)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    storescu = require_tool("storescu", "dcmtk")
    receivers: dict[str, Callable[[Path], _Receiver]] = {
        "bare pynetdicom": _start_bare, "ours": _start_ours, "Orthanc": _start_orthanc}
    samples: dict[tuple[str, int], list[_Sample]] = {
        (name, senders): [] for senders in SENDERS for name in receivers}
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        files = make_ct_series(work / "in", args.count)
        for path in files:  # warm the page cache so every sender reads from memory
            path.read_bytes()
        folders = {1: [work / "in"], 4: _quarters(files, work)}
        for repeat in range(args.repeats):
            for senders in SENDERS:
                for name, start_receiver in receivers.items():
                    root = work / f"r{repeat}-{senders}-{name.split()[0].lower()}"
                    samples[name, senders].append(_round(
                        name, start_receiver, storescu, folders[senders], args.count, root))
        echo_ours, echo_orthanc = _echo_medians(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    acknowledged = {key: statistics.median(s.acknowledged for s in values)
                    for key, values in samples.items()}
    indexed = {key: statistics.median(s.indexed for s in values)
               for key, values in samples.items()}
    print(f"ingest: {args.count} CT instances 512x512x16 sent by DCMTK storescu over loopback, "
          f"median of {args.repeats} interleaved rounds")
    print("| receiver | senders | acknowledged/s | stored and indexed/s "
          "| acknowledged / bare acknowledged | indexed / bare acknowledged |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (name, senders) in samples:
        bare = acknowledged["bare pynetdicom", senders]
        if name == "bare pynetdicom":  # writes files, indexes nothing
            stored, stored_ratio = "-", "-"
        else:
            stored = f"{indexed[name, senders]:.0f}"
            stored_ratio = f"{indexed[name, senders] / bare:.2f}x"
        print(f"| {name} | {senders} | {acknowledged[name, senders]:.0f} | {stored} "
              f"| {acknowledged[name, senders] / bare:.2f}x | {stored_ratio} |")
    missed = False
    for senders in SENDERS:
        plural = "sender" if senders == 1 else "senders"
        bare = acknowledged["bare pynetdicom", senders]
        ours = acknowledged["ours", senders] / bare
        orthanc = acknowledged["Orthanc", senders] / bare
        missed |= ours < ACKNOWLEDGED_TARGET
        print(f"acknowledged ours/bare-pynetdicom ({senders} {plural}) = {ours:.2f}x "
              f"(target >= {ACKNOWLEDGED_TARGET:.2f}x); Orthanc/bare-pynetdicom = {orthanc:.2f}x")
    for senders in SENDERS:
        plural = "sender" if senders == 1 else "senders"
        bare = acknowledged["bare pynetdicom", senders]
        ours = indexed["ours", senders] / bare
        orthanc = indexed["Orthanc", senders] / bare
        missed |= ours < INDEXED_TARGET
        print(f"indexed ours/bare-pynetdicom ({senders} {plural}) = {ours:.2f}x "
              f"(target >= {INDEXED_TARGET:.2f}x); Orthanc/bare-pynetdicom = {orthanc:.2f}x")
    for senders in SENDERS:  # against Orthanc, which indexes as it acknowledges
        plural = "sender" if senders == 1 else "senders"
        orthanc = acknowledged["Orthanc", senders]
        print(f"acknowledged ours/Orthanc ({senders} {plural}) = "
              f"{acknowledged['ours', senders] / orthanc:.2f}x (target >= 1.00x)")
        print(f"indexed ours/Orthanc ({senders} {plural}) = "
              f"{indexed['ours', senders] / orthanc:.2f}x (target >= 0.70x)")
    print(f"C-ECHO ours={echo_ours:.1f} ms Orthanc={echo_orthanc:.1f} ms, association "
          f"included, median of {ECHO_ROUNDS}")
    print(f"C-ECHO round trip ours/Orthanc = {echo_ours / echo_orthanc:.2f}x (target <= 1.50x)")
    return 1 if missed else 0
