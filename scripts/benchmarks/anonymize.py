"""De-identification throughput against a plain pydicom read-and-write floor.

One process, the same CT files (512x512, 16 bit) for every contender, each
run three times, the median kept:

- floor: ``dcmread`` + ``dcmwrite`` of each file, nothing else (what any
  pydicom-based tool must at least spend);
- ours: read, de-identify (PS3.15 Basic Profile with the default options,
  residual-PHI gate on), write atomically, as ``dicom-gateway anonymize`` does;
- dicognito: read, ``Anonymizer().anonymize(ds)``, write.

It prints instances/s and the ratios ours/floor and ours/dicognito.
"""

from __future__ import annotations

import argparse
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
from anonymizer.batch import Outcome, deidentify_file  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402


def _floor(files: list[Path], out: Path) -> None:
    for index, path in enumerate(files):
        ds = dcmread(path)
        dcmwrite(out / f"{index}.dcm", ds, enforce_file_format=True)


def _ours(files: list[Path], out: Path) -> None:
    profile = Profile.build()
    lookup = KeyedPseudonyms(b"benchmark secret of 32 bytes....")
    for path in files:
        report = deidentify_file(path, out, profile, lookup)
        if report.outcome is not Outcome.DEIDENTIFIED:
            raise SystemExit(f"benchmark input failed: {report.reason}")


def _dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")
    for index, path in enumerate(files):
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        dcmwrite(out / f"{index}.dcm", ds, enforce_file_format=True)


def _measure(run: Callable[[list[Path], Path], None], files: list[Path], work: Path,
             repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(dir=work))
        start = time.perf_counter()
        run(files, out)
        rates.append(len(files) / (time.perf_counter() - start))
        shutil.rmtree(out)
    return statistics.median(rates)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench anonymize")
    parser.add_argument("-n", "--count", type=int, default=240, help="CT instances (default 240)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-anonymize-") as tmp:
        work = Path(tmp)
        files = make_ct_series(work / "in", args.count)
        for path in files:  # warm the page cache so every contender reads from memory
            path.read_bytes()
        contenders: dict[str, Callable[[list[Path], Path], None]] = {
            "floor": _floor, "ours": _ours, "dicognito": _dicognito,
        }
        rates = {name: 0.0 for name in contenders}
        for name, run in contenders.items():
            rates[name] = _measure(run, files, work, args.repeats)
    print(f"anonymize: {args.count} CT instances 512x512x16, median of {args.repeats}")
    print(f"| contender | instances/s | ratio to floor |")
    print(f"| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / rates['floor']:.2f}x |")
    print(f"ours/floor = {rates['ours'] / rates['floor']:.2f}x (target >= 0.70x)")
    print(f"ours/dicognito = {rates['ours'] / rates['dicognito']:.2f}x")
    return 0 if rates["ours"] / rates["floor"] >= 0.7 else 1
