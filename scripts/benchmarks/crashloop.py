"""kill -9 of a served node at random moments while storescu sends, N times (RELIABILITY T26).

The loop and its checks are :func:`tests.crashloop.run_crashloop`: a node
started as a user starts it, with a route to a DCMTK ``storescp`` sink
(immediate schedule), a storescu sender that keeps sending fresh studies,
and ``--kills`` SIGKILLs of the node's process group, each a uniformly
random delay after it logged its configuration (during start-up repair,
while receiving, ingesting or forwarding), each followed by a restart. Then the node settles
and the run checks that every acknowledged instance is indexed and
forwarded, and that none was queued twice or sent twice by one life of the
node. With ``--aimed`` each life instead kills itself at a step of the
durability contract, the steps taken in turn (tests/crashpoint.py: written
but not fsync'd, fsync'd but not answered, committed but not released,
delivered but not recorded). Prints the counts; exits 1 on any violation.
Not a speed benchmark: the figures are counts, and the elapsed time only
tells how long it took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import require_tool  # noqa: E402
from tests.crashloop import run_crashloop  # noqa: E402
from tests.crashpoint import STEPS  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench crashloop")
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs of the node (200)")
    parser.add_argument("--seed", type=int, default=1, help="kill delays and study UIDs (1)")
    parser.add_argument("--max-delay", type=float, default=15.0,
                        help="each kill comes uniform(0, this) seconds after the node "
                             "logged its configuration (15.0)")
    parser.add_argument("--aimed", action="store_true",
                        help=f"kill at each step in turn ({', '.join(STEPS)}) instead of at "
                             "random moments; --max-delay bounds a life that never gets there")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.max_delay <= 0:
        parser.error("--kills must be at least 1 and --max-delay positive")
    for tool in ("storescu", "storescp"):
        require_tool(tool, "dcmtk")
    work = Path(tempfile.mkdtemp(prefix="bench-crashloop-"))
    started = time.monotonic()
    try:
        result = run_crashloop(work, kills=args.kills, seed=args.seed,
                               max_delay=args.max_delay, points=STEPS if args.aimed else (),
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    kept = f", kept in {work}" if args.keep else ""
    how = ("aimed at each step in turn" if args.aimed else
           f"uniform(0, {args.max_delay:g}) s after each start-up began")
    print(f"crashloop: seed {args.seed}, kill -9 {how}, "
          f"{time.monotonic() - started:.0f} s{kept}")
    for line in result.lines():
        print(line)
    return 1 if result.violations else 0
