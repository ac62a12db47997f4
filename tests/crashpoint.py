"""``dicom-gateway`` that kills its own process group at a chosen step (RELIABILITY T26).

``python -m tests.crashpoint serve ...`` runs the CLI as ``dicom-gateway``
does, with ``CRASHPOINT=STEP:N`` in the environment: the N-th time a process
of the node reaches STEP, it sends SIGKILL to the node's whole process group
(``serve`` started in a session of its own, with its ingest workers and
receiving processes), as a power cut or ``kill -9`` there would. The steps
are the moments the catalogue names:

- ``written``: a received dataset is in the spool's temporary name, not yet
  fsync'd (before ``storage.spool.fsync_file``);
- ``durable``: it is fsync'd and renamed into ``incoming/``, and the C-STORE
  response is not sent yet (after ``Spool.accept``);
- ``committed``: an ingest batch's transaction is committed and its spool
  entries are not yet released (before ``Spool.release_all``);
- ``sent``: instances were stored at the destination and their outcomes not
  yet recorded (before ``gateway.forwarder._record``).

The patches are made when this module is imported, so they also hold in
the worker and receiving processes, which ``multiprocessing`` (spawn)
starts by importing the parent's main module. Production code carries no
trace of them. Used by :func:`tests.crashloop.run_crashloop` with ``points``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import gateway.forwarder
import storage.spool

__all__ = ["STEPS"]

STEPS = ("written", "durable", "committed", "sent")

_lock = threading.Lock()
_reached = [0]


def _kill_the_node() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _counting(step: str, wanted: str, nth: int) -> bool:
    """Whether this arrival at ``step`` is the one to die at."""
    if step != wanted:
        return False
    with _lock:
        _reached[0] += 1
        return _reached[0] == nth


def _before(step: str, wanted: str, nth: int, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _counting(step, wanted, nth):
            _kill_the_node()
        return call(*args, **kwargs)
    return wrapper


def _after(step: str, wanted: str, nth: int, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        if _counting(step, wanted, nth):
            _kill_the_node()
        return result
    return wrapper


def _install(spec: str) -> None:
    wanted, _, nth_text = spec.partition(":")
    if wanted not in STEPS or not nth_text.isdigit():
        raise SystemExit(f"CRASHPOINT: expected STEP:N with STEP one of {STEPS}, got {spec!r}")
    nth = int(nth_text)
    storage.spool.fsync_file = _before(  # type: ignore[assignment]
        "written", wanted, nth, storage.spool.fsync_file)
    spool = storage.spool.Spool
    spool.accept = _after("durable", wanted, nth, spool.accept)  # type: ignore[method-assign]
    spool.release_all = _before(  # type: ignore[method-assign]
        "committed", wanted, nth, spool.release_all)
    gateway.forwarder._record = _before(  # type: ignore[assignment]
        "sent", wanted, nth, gateway.forwarder._record)


if os.environ.get("CRASHPOINT"):
    _install(os.environ["CRASHPOINT"])

if __name__ == "__main__":
    from gateway.cli import main

    main(prog_name="dicom-gateway")
