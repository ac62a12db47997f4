"""Run the benchmarks: ``python -m scripts.benchmarks [NAME] [options]``."""

from __future__ import annotations

import argparse
import sys

from . import anonymize, crashloop, forward, ingest, memory, query

BENCHMARKS = {"anonymize": anonymize.main, "crashloop": crashloop.main, "forward": forward.main,
              "ingest": ingest.main, "memory": memory.main, "query": query.main}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), help="one benchmark")
    args, rest = parser.parse_known_args(argv)
    names = [args.name] if args.name else sorted(BENCHMARKS)
    status = 0
    for name in names:
        status |= BENCHMARKS[name](rest)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
