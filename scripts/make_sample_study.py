#!/usr/bin/env python3
"""Write a synthetic DICOM study with fake PHI (see tests/corpus.py).

Usage::

    python scripts/make_sample_study.py OUT_DIR [--valid | --planted | --ct N] [--seed S]

``--valid`` (the default) writes IOD-valid objects of two fake patients,
``--planted`` the adversarial corpus where every PS3.15 Table E.1-1
attribute holds a planted value, ``--ct N`` a series of N 512x512 CT slices
for benchmarks. Nothing in the output is real patient data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.corpus import make_ct_series, make_planted_corpus, make_valid_study  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and write the requested corpus; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="output directory (created if missing)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--valid", action="store_true",
                      help="IOD-valid study objects with realistic fake PHI (default)")
    what.add_argument("--planted", action="store_true",
                      help="adversarial objects with every Table E.1-1 attribute planted")
    what.add_argument("--ct", type=int, metavar="N", help="N 512x512 CT slices for benchmarks")
    parser.add_argument("--seed", type=int, default=0, help="selects the UIDs (default 0)")
    args = parser.parse_args(argv)

    try:
        if args.ct is not None:
            if args.ct < 1:
                parser.error("--ct needs a positive number of slices")
            paths = make_ct_series(args.out_dir, args.ct, seed=args.seed)
            print(f"wrote {len(paths)} CT slices to {args.out_dir}")
            return 0
        make = make_planted_corpus if args.planted else make_valid_study
        corpus = make(args.out_dir, seed=args.seed)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for kind, path in sorted(corpus.files.items()):
        print(f"{kind:16} {path}")
    print(f"{len(corpus.files)} files, {len(corpus.tokens)} planted PHI tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
