"""Run the benchmarks: ``python -m scripts.benchmarks [NAME] [options]``.

After the run, every ratio printed against its target is gathered into one
Markdown table (:mod:`scripts.benchmarks.summary`), printed and written to
``bench-results/summary.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import anonymize, crashloop, forward, ingest, memory, query, scale
from .summary import Recorder, table

SUMMARY = Path(__file__).resolve().parents[2] / "bench-results" / "summary.md"

BENCHMARKS = {"anonymize": anonymize.main, "crashloop": crashloop.main, "forward": forward.main,
              "ingest": ingest.main, "memory": memory.main, "query": query.main,
              "scale": scale.main}
#: run by name only: a fault loop of about three quarters of an hour, not a speed figure
BY_NAME_ONLY = {"crashloop"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), help="one benchmark")
    args, rest = parser.parse_known_args(argv)
    names = [args.name] if args.name else sorted(set(BENCHMARKS) - BY_NAME_ONLY)
    status = 0
    recorder = Recorder(sys.stdout)
    with contextlib.redirect_stdout(recorder):
        for name in names:
            recorder.benchmark = name
            status |= BENCHMARKS[name](rest)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    summary = (f"# scripts/bench {' '.join(argv)}\n\n"
               f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
               f"at the end {load}; each ratio against a reference measured in this run\n\n"
               + table(recorder.results))
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(summary, encoding="utf-8")
    print(f"\n{summary}\n(written to {SUMMARY.relative_to(SUMMARY.parents[1])})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
