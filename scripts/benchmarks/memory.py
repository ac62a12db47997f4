"""Memory: one 2 GB instance received and ingested with the node's RSS growing < 150 MB.

A multi-frame instance of 2,000,000,000 bytes of pixel data (1000 frames of
1000x1000, 16 bit) is written without ever holding its pixels in memory (the
pixel data is a window on a sparse file), sent by DCMTK storescu to a
``dicom-gateway serve`` process, and the node's resident memory is sampled
from /proc every 20 ms from before the association until the instance is
indexed. It prints the baseline, the peak and the growth; the target is a
growth below 150 MB (ARCHITECTURE durability contract 4: received datasets
stream to disk, pixel data is never decoded, files are written from disk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from anonymizer.streams import streamed_file  # noqa: E402

_KEY = "5eed" * 16
_MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_large_instance(path: Path, frames: int, rows: int, columns: int) -> int:
    """Write an XA multi-frame instance whose pixel data comes from a sparse file."""
    size = frames * rows * columns * 2
    pixels = path.with_suffix(".pixels")
    with pixels.open("wb") as fh:
        fh.truncate(size)  # sparse: zeros that take no disk until written
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "MEMORY^BENCHMARK"
    ds.PatientID = "MEM-0001"
    ds.Modality = "XA"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.add(streamed_file(0x7FE00010, "OW", pixels, size))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    pixels.unlink()
    return size


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench memory")
    parser.add_argument("--frames", type=int, default=1000, help="1000 frames = 2 GB")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    node: subprocess.Popen[bytes] | None = None
    try:
        instance = work / "large.dcm"
        size = make_large_instance(instance, args.frames, 1000, 1000)
        port, data = _free_port(), work / "var"
        env = {**os.environ, "DICOM_GATEWAY_HMAC_KEY": _KEY, "TCP_NODELAY": "1"}
        node = subprocess.Popen(
            [str(Path(sys.executable).parent / "dicom-gateway"), "-q", "serve", "--port",
             str(port), "--data-dir", str(data)], env=env, cwd=work,
        )
        echo = ["echoscu", "-aec", "GATEWAY", "127.0.0.1", str(port)]
        deadline = time.monotonic() + 60
        while subprocess.run(echo, capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline or node.poll() is not None:
                raise SystemExit("the node did not start")
            time.sleep(0.2)
        time.sleep(1.0)  # let start-up settle before the baseline
        baseline = _rss(node.pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss(node.pid))  # type: ignore[union-attr]
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        sent = subprocess.run(["storescu", "-aec", "GATEWAY", "127.0.0.1", str(port),
                               str(instance)], capture_output=True, text=True, env=env,
                              check=False)
        if sent.returncode != 0:
            raise SystemExit(f"storescu failed: {sent.stdout[-500:]}{sent.stderr[-500:]}")
        acknowledged = time.monotonic() - started
        database = data / "gateway.sqlite3"
        while True:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                if db.execute("SELECT count(*) FROM instance").fetchone()[0] == 1:
                    break
            if time.monotonic() - started > 1800:
                raise SystemExit("the instance was not indexed within 30 minutes")
            time.sleep(0.05)
        indexed = time.monotonic() - started
        done.set()
        sampler.join()
        growth = peak - baseline
        print(f"memory: one instance of {size / 1e9:.2f} GB ({args.frames} frames 1000x1000x16)")
        print("| measure | value |")
        print("| --- | ---: |")
        print(f"| acknowledged after | {acknowledged:.1f} s |")
        print(f"| indexed after | {indexed:.1f} s |")
        print(f"| node RSS before | {baseline / _MB:.0f} MB |")
        print(f"| node RSS peak | {peak / _MB:.0f} MB |")
        print(f"RSS growth = {growth / _MB:.0f} MB (target < 150 MB)")
        return 0 if growth < 150 * _MB else 1
    finally:
        if node is not None and node.poll() is None:
            node.terminate()
            node.wait(30)
        shutil.rmtree(work, ignore_errors=True)
