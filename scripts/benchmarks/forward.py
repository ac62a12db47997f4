"""Forwarding throughput: our forwarder against DCMTK storescu, to the same Orthanc.

One run, loopback only. CT instances (512x512x16, about 0.5 MB each) are
ingested once by a node built in this process (de-identified, stored,
indexed). Then, in interleaved rounds, each sender delivers the same stored
files to a fresh Orthanc (its defaults, SQLite index), and the median is
kept:

- reference: DCMTK ``storescu`` (``TCP_NODELAY=1``) sending the node's
  stored files, one association;
- ours: ``study forward`` as the node does it: one job queued, then
  :func:`gateway.forwarder.run_due` sends it from the store over one
  association (pynetdicom SCU, TCP_NODELAY) and records every instance's
  status in the database.

Both rates are instances/s until the sender finished, which Orthanc only
allows once it has stored and indexed each instance; the ratio ours/DCMTK
is printed beside the target (issue: at least 0.8x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import storage.jobs as jobs  # noqa: E402
import storage.peers as peers  # noqa: E402
from gateway.app import App, build_app  # noqa: E402
from gateway.forwarder import run_due  # noqa: E402
from gateway.ingest import run_once  # noqa: E402
from storage.db import session_scope  # noqa: E402
from storage.models import Study  # noqa: E402
from storage.records import PeerRecord  # noqa: E402
from storage.spool import SpoolMeta  # noqa: E402
from tests.conftest import TEST_KEY_HEX, node_settings, require_tool  # noqa: E402
from tests.corpus import make_ct_series  # noqa: E402
from tests.interop.conftest import free_port  # noqa: E402
from tests.interop.orthanc import Orthanc, start_orthanc  # noqa: E402

TARGET = 0.80


def _node(work: Path, count: int) -> tuple[App, str]:
    """A node holding ``count`` ingested CT instances; its app and the study's UID."""
    settings = node_settings(work / "node", f"sqlite:///{work / 'node' / 'gateway.sqlite3'}")
    app = build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX})
    meta = SpoolMeta(calling_ae_title="CLINIC", called_ae_title="GATEWAY", source_peer=None,
                     received_at=datetime.now(UTC), peer_address="127.0.0.1")
    for path in make_ct_series(work / "in", count):
        app.spool.accept(path, meta)
    report = run_once(app)
    if report.stored != count:
        raise RuntimeError(f"ingest stored {report.stored} of {count} instances")
    with session_scope(app.engine, readonly=True) as session:
        uid = session.scalars(select(Study.study_instance_uid)).one()
    return app, str(uid)


def _orthanc(work: Path, name: str) -> Orthanc:
    return start_orthanc(work / name, free_port(), free_port())


def _count(orthanc: Orthanc) -> int:
    return int(orthanc.get("/statistics")["CountInstances"])


def _storescu(app: App, orthanc: Orthanc, count: int) -> float:
    start = time.perf_counter()
    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-aet", "GATEWAY", "-aec", orthanc.ae_title,
         "+sd", "+r", "--propose-lossless", "127.0.0.1", str(orthanc.dicom_port),
         str(app.store.root)],
        capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, check=False)
    elapsed = time.perf_counter() - start
    if run.returncode != 0 or _count(orthanc) != count:
        raise RuntimeError(f"storescu to Orthanc failed: {(run.stdout + run.stderr)[-1500:]}")
    return count / elapsed


def _ours(app: App, study: str, orthanc: Orthanc, count: int, round_: int) -> float:
    slug = f"orthanc-{round_}"
    with session_scope(app.engine) as session:
        peers.add(session, PeerRecord(slug=slug, ae_title=orthanc.ae_title, host="127.0.0.1",
                                      port=orthanc.dicom_port, roles=("destination",)))
    start = time.perf_counter()
    with session_scope(app.engine) as session:
        jobs.enqueue(session, study, slug, datetime.now(UTC))
    report = run_due(app)
    elapsed = time.perf_counter() - start
    if report.done != 1 or _count(orthanc) != count:
        raise RuntimeError(f"our forwarder delivered {_count(orthanc)} of {count} ({report})")
    return count / elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench forward")
    parser.add_argument("-n", "--count", type=int, default=500, help="CT instances (default 500)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    require_tool("storescu", "dcmtk")
    work = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    rates: dict[str, list[float]] = {"DCMTK storescu": [], "ours": []}
    try:
        app, study = _node(work, args.count)
        try:
            for round_ in range(args.repeats):
                for name in rates:
                    orthanc = _orthanc(work, f"orthanc-{round_}-{name.split()[0]}")
                    try:
                        os.sync()  # no round pays for the previous one's dirty pages
                        rate = (_storescu(app, orthanc, args.count) if name != "ours"
                                else _ours(app, study, orthanc, args.count, round_))
                    finally:
                        orthanc.stop()
                        shutil.rmtree(orthanc.root, ignore_errors=True)
                    rates[name].append(rate)
        finally:
            app.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"forward: {args.count} CT instances 512x512x16 from the store to Orthanc over "
          f"loopback, median of {args.repeats} interleaved rounds")
    print("| sender | instances/s |")
    print("| --- | ---: |")
    for name, rate in medians.items():
        print(f"| {name} | {rate:.0f} |")
    ratio = medians["ours"] / medians["DCMTK storescu"]
    print(f"forward ours/DCMTK-storescu = {ratio:.2f}x (target >= {TARGET:.2f}x)")
    return 0 if ratio >= TARGET else 1
