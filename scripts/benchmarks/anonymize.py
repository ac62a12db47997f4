"""De-identification throughput against a plain pydicom read-and-write floor.

One process, the same CT files (512x512, 16 bit) for every contender, each
run three times, the median kept:

- floor: ``dcmread`` + ``dcmwrite`` of each file, nothing else (what any
  pydicom-based tool must at least spend);
- ours: read, de-identify (PS3.15 Basic Profile with the default options,
  residual-PHI gate on), write atomically, as ``dicom-gateway anonymize`` does;
- dicognito: read, ``Anonymizer().anonymize(ds)``, write.

``anonymize`` syncs its output to disk once at the end of a run; a plain
read-and-write does not, and on a slow disk that sync costs more than the
de-identification. So both comparisons are printed: without the sync on
either side (the engine's own cost) and with it on both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.filewriter import dcmwrite

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from anonymizer import KeyedPseudonyms, Profile  # noqa: E402
from anonymizer.batch import Outcome, run  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402


def _floor(files: list[Path], out: Path) -> None:
    for index, path in enumerate(files):
        ds = dcmread(path)
        dcmwrite(out / f"{index}.dcm", ds, enforce_file_format=True)


def _ours(files: list[Path], out: Path, sync: bool = True) -> None:
    profile = Profile.build()
    lookup = KeyedPseudonyms(b"benchmark secret of 32 bytes....")
    report = run(files, out, profile, lookup, sync=sync)  # what `dicom-gateway anonymize` runs
    if report.counts[Outcome.DEIDENTIFIED] != len(files):
        raise SystemExit(f"benchmark input failed: {report.attention[:1]}")


def _ours_unsynced(files: list[Path], out: Path) -> None:
    _ours(files, out, sync=False)


def _floor_synced(files: list[Path], out: Path) -> None:
    _floor(files, out)
    os.sync()


def _dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")
    for index, path in enumerate(files):
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        dcmwrite(out / f"{index}.dcm", ds, enforce_file_format=True)


def _scratch(work: Path, in_memory: bool) -> Path:
    """A fresh output folder: in memory (tmpfs) to measure CPU, on disk to measure syncing."""
    shm = Path("/dev/shm")
    base = shm if in_memory and shm.is_dir() and os.access(shm, os.W_OK) else work
    return Path(tempfile.mkdtemp(prefix="bench-out-", dir=base))


def _time_once(run: Callable[[list[Path], Path], None], files: list[Path], out: Path) -> float:
    os.sync()  # no run pays for the previous one's dirty pages
    start = time.perf_counter()
    run(files, out)
    rate = len(files) / (time.perf_counter() - start)
    shutil.rmtree(out)
    return rate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench anonymize")
    parser.add_argument("-n", "--count", type=int, default=240, help="CT instances (default 240)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # name -> (run, writes to disk and syncs)
    contenders: dict[str, tuple[Callable[[list[Path], Path], None], bool]] = {
        "floor": (_floor, False),
        "ours (no final sync)": (_ours_unsynced, False),
        "dicognito": (_dicognito, False),
        "floor + sync": (_floor_synced, True),
        "ours": (_ours, True),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="bench-anonymize-") as tmp:
        work = Path(tmp)
        files = make_ct_series(work / "in", args.count)
        for path in files:  # warm the page cache so every contender reads from memory
            path.read_bytes()
        # rounds of every contender in turn, so that drift of a shared machine hits all alike
        for _ in range(args.repeats):
            for name, (run, on_disk) in contenders.items():
                samples[name].append(_time_once(run, files, _scratch(work, not on_disk)))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    print(f"anonymize: {args.count} CT instances 512x512x16, one process, "
          f"median of {args.repeats} interleaved rounds")
    print("| contender | instances/s | ratio to floor |")
    print("| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / rates['floor']:.2f}x |")
    cpu_ratio = rates["ours (no final sync)"] / rates["floor"]
    durable_ratio = rates["ours"] / rates["floor + sync"]
    print(f"ours/floor, neither syncing (output in memory) = {cpu_ratio:.2f}x (target >= 0.70x)")
    print(f"ours/floor, both syncing to disk once at the end = {durable_ratio:.2f}x "
          "(target >= 0.70x)")
    print(f"ours/dicognito (neither syncing) = "
          f"{rates['ours (no final sync)'] / rates['dicognito']:.2f}x")
    return 0 if min(cpu_ratio, durable_ratio) >= 0.7 else 1
