"""T10 at the catalogue's scale, against ``dicom-gateway serve``.

5,000 bare TCP connects, then 2,000 A-ASSOCIATE-RQs open at once, while a
clinic's association that was up before the flood keeps storing. What the
catalogue asks (RELIABILITY T10, I4), read from outside the process:

- requests past ``limits.max_associations`` get A-ASSOCIATE-RJ (2, 3, 2)
  (transient, service-provider presentation, local limit exceeded; PS3.8
  9.3.4), or, past the listener's connection cap
  (:func:`gateway.reuseport.connection_cap`), a connection closed on accept;
  never an acceptance past the limit;
- the in-flight C-STOREs all complete with 0x0000 and are indexed;
- the process's threads stay within two per capped connection during the
  flood (/proc/PID/status) and come back to their baseline after it, RSS
  within a bound;
- an echo works afterwards.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway.reuseport import connection_cap
from tests.conftest import wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, indexed_count
from tests.rawpeer import Closed, RawPeer, Reply, associate_rq, closed_within, release_rq

pytestmark = [pytest.mark.interop, pytest.mark.slow]  # a minute of flood: CI

CONNECTS = 5000
REQUESTS = 2000
LIMIT = 10
STORES = 20


def _status(pid: int) -> tuple[int, int]:
    """Threads and RSS (KiB) of ``pid``."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0])


class Sampler:
    """The highest thread count and RSS of a process, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.threads, self.rss = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            threads, rss = _status(self.pid)
            self.threads, self.rss = max(self.threads, threads), max(self.rss, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _keep_storing(port: int, files: list[Path], statuses: list[int], up: threading.Event,
                  done: threading.Event) -> None:
    """A clinic's association, up before the flood, storing through it until ``done``
    (the study over and over: a repeat of the same bytes is answered 0x0000 and kept once)."""
    ae = AE(ae_title="CLINIC")
    ae.add_requested_context(CTImageStorage)
    ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
    if not assoc.is_established:
        up.set()
        return
    try:
        while not done.is_set():
            for path in files:
                statuses.append(int(assoc.send_c_store(dcmread(path)).Status))
            up.set()  # one round stored: the node's pools are up
            done.wait(0.2)
    finally:
        assoc.release()


def test_a_flood_at_catalogue_scale_is_refused_bounded_and_recovered_from(
        serve: Callable[..., ServedNode], tmp_path: Path) -> None:
    node = serve(DICOM_GATEWAY_LIMITS__MAX_ASSOCIATIONS=str(LIMIT))
    pid = node.process.pid
    study = make_clinic_study(tmp_path / "study", series=1, per_series=STORES, jpeg=False)
    statuses: list[int] = []
    up, done = threading.Event(), threading.Event()
    clinic = threading.Thread(target=_keep_storing, args=(
        node.port, list(study.files.values()), statuses, up, done), name="clinic")
    clinic.start()
    assert up.wait(60) and statuses, "the clinic's association before the flood"
    # the clinic's two threads are part of this: they are gone when the flood is over
    baseline_threads, baseline_rss = _status(pid)
    sampler = Sampler(pid)
    started = time.monotonic()
    try:
        for _ in range(CONNECTS):
            socket.create_connection(("127.0.0.1", node.port), timeout=60).close()
        connected = time.monotonic()
        stored_before = len(statuses)
        peers = [RawPeer(node.port, timeout=120) for _ in range(REQUESTS)]
        try:
            for peer in peers:
                peer.send(associate_rq())
            replies = [peer.receive() for peer in peers]
            answered = time.monotonic()
            stored_during = len(statuses) - stored_before
            accepted = [p for p, r in zip(peers, replies) if getattr(r, "pdu_type", 0) == 0x02]
            for peer in accepted:
                peer.send(release_rq())
                assert [r.pdu_type for r in closed_within(peer, 30)] == [0x06]
        finally:
            for peer in peers:
                peer.close()
    finally:
        done.set()
        clinic.join(120)
        sampler.stop()
    refused = [r for r in replies if getattr(r, "pdu_type", 0) != 0x02]
    assert len(accepted) <= LIMIT - 1  # one place is the clinic's
    assert {r.rejection if isinstance(r, Reply) else "closed" for r in refused} <= {
        (2, 3, 2), "closed"}
    assert sum(isinstance(r, Reply) for r in refused) > 0, "no A-ASSOCIATE-RJ at all"
    assert not any(isinstance(r, Closed) for r in accepted)
    assert stored_during > 0, "the clinic stored while the 2,000 requests were answered"
    assert set(statuses) == {0x0000}, "every in-flight C-STORE completed"
    wait_until(lambda: indexed_count(node.database_url) == STORES, timeout=60,
               what=f"{STORES} instances indexed")
    print(f"connects {connected - started:.1f} s, requests {answered - connected:.1f} s, "
          f"{len(statuses)} stores ({stored_during} while the requests were answered); "
          f"peak threads={sampler.threads} (baseline {baseline_threads}) "
          f"peak rss={sampler.rss} KiB (baseline {baseline_rss}); "
          f"accepted={len(accepted)} rejected={sum(isinstance(r, Reply) for r in refused)} "
          f"closed={sum(isinstance(r, Closed) for r in refused)}")
    # two threads per association held (pynetdicom's DUL and reactor), the clinic's included,
    # beside a few of the node's own that the load starts (database pool, forwarding clock)
    bound = baseline_threads + 2 * (connection_cap(LIMIT) + 1) + 16
    assert sampler.threads <= bound, f"{sampler.threads} threads at the peak, over {bound}"
    wait_until(lambda: _status(pid)[0] <= baseline_threads, timeout=60,
               what=f"threads back to {baseline_threads}")
    assert _status(pid)[1] - baseline_rss < 64 * 1024, "RSS grew by more than 64 MiB"
