"""What the node audits, and how the network side writes records without failing a request.

RELIABILITY.md I5 and issue "audit trail": one record for every
association accepted or rejected, store, query, retrieve, move, forward,
re-identification, release and deletion; who (a calling AE title, the
operating-system user of a command), what (the event and, where one study
is concerned, its remapped StudyInstanceUID), when (UTC), outcome. Never
PHI: details quote peer slugs, addresses, counts, statuses and remapped
UIDs only (:mod:`storage.audit`).

Where each record is written, and its volume:

- ``association-accepted`` / ``association-rejected``: one per association
  (:mod:`gateway.scp`): a rejection by our policy when it is decided, an
  acceptance once the A-ASSOCIATE-AC went out, and the association layer's
  own rejections (past ``limits.max_associations``) once the -RJ went out;
- ``store``: by the ingest group commit, in the transaction that indexes the
  instances, one per (sender, study) of each committed batch with the count
  of instances (``instances=N``): not one per instance, so a 2,000-image
  study adds a few dozen rows, and no write on the receiving thread;
  ``store-refused`` for a C-STORE answered with a failure (or aborted for
  a malformed UID in its command, :mod:`gateway.commandcheck`, which
  writes ``request-refused`` for other requests), ``quarantine`` for an
  instance set aside;
- ``find`` (and ``find-refused``): one per C-FIND, when it ends;
- ``move`` / ``get`` (and ``-refused``): one per C-MOVE or C-GET with its
  sub-operation counts (:mod:`gateway.retrieve`);
- ``forward``: one per attempt a forwarder closes, in the transaction that
  closes it (:func:`forward_outcome`);
- ``reidentify``, ``quarantine-release``, ``study-delete`` and the
  administration commands: by the CLI, in the transaction of the change;
- ``node-start`` / ``node-stop``: when a node starts and stops listening.

The network-side writes (:func:`record_quietly`) never turn into a failed
DIMSE response: if the database cannot take the record, the failure is
logged (without the record's detail) and the request goes on. Refusals
(rejected associations, refused stores, queries and retrieves) are written
before the response goes out. The frequent successes of the network side
(``association-accepted``, ``find``), and the rejections past the
association limit, which come in bursts, are handed to the node's
:class:`AuditWriter` instead (``queued=True``), which commits them in
batches every :data:`FLUSH_SECONDS` from a thread of its own: an
association or a query does not wait for a commit of its audit record (on
SQLite that was a fifth of a C-ECHO association's time). The price: records
queued when the process is killed (at most the last
:data:`FLUSH_SECONDS`) are lost; a node that stops normally flushes them.

A record the database refuses (it is down or locked, RELIABILITY T28),
queued or not, is kept by the writer and tried again every
:data:`RETRY_SECONDS` until it is committed; its ``at`` is when the
event happened. Only records still held when the node
stops with the database unavailable are lost, and the log says how many.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import storage.audit as audit
import storage.jobs as jobs
from storage.db import session_scope
from storage.errors import StorageError
from storage.queue_models import JobState

from .app import App

__all__ = ["FLUSH_SECONDS", "RETRY_SECONDS", "AuditWriter", "forward_outcome", "record_quietly"]

logger = logging.getLogger(__name__)

#: how long a queued record waits at most before its batch is committed
FLUSH_SECONDS: Final = 0.2
#: records committed together at most
_BATCH: Final = 500
#: records waiting at most; past this the caller writes its own (back-pressure, never a loss)
_QUEUED: Final = 10_000
#: the pause before a batch the database refused is tried again
RETRY_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class _Pending:
    event: str
    actor: str
    outcome: str
    study_instance_uid: str | None
    detail: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


#: the running writer of each node, by its engine
_WRITERS: weakref.WeakKeyDictionary[Engine, AuditWriter] = weakref.WeakKeyDictionary()


class AuditWriter:
    """Commit a node's queued audit records in batches, off the network threads.

    :meth:`start` registers it for the node's engine, so that
    :func:`record_quietly` with ``queued=True`` hands records to it;
    :meth:`stop` writes what is left and unregisters it.
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._queue: queue.Queue[_Pending] = queue.Queue(maxsize=_QUEUED)
        self._stop = threading.Event()
        self._held: list[_Pending] = []  # taken from the queue, not yet committed
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    def start(self) -> None:
        _WRITERS[self._app.engine] = self
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking records, then commit every queued one."""
        if _WRITERS.get(self._app.engine) is self:
            del _WRITERS[self._app.engine]
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        left = self._held + self._drain(_QUEUED)  # held, or submitted while it was finishing
        self._held = []
        if left:
            _write(self._app, left)

    def _drain(self, most: int) -> list[_Pending]:
        taken: list[_Pending] = []
        while len(taken) < most:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def submit(self, item: _Pending) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the database is far behind: this caller waits for its own record
            _write(self._app, [item])

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            if not self._held:
                try:
                    self._held.append(self._queue.get(timeout=FLUSH_SECONDS))
                except queue.Empty:
                    continue
                self._stop.wait(FLUSH_SECONDS)  # gather what comes meanwhile (not when stopping)
            batch = self._held + self._drain(max(1, _BATCH - len(self._held)))
            if _write(self._app, batch):
                self._held = []
                continue
            # the database refused it (down, locked): kept, and tried again after a pause
            self._held = batch[-_QUEUED:]
            if self._stop.wait(RETRY_SECONDS):
                return  # stop() tries what is held once more


def _write(app: App, batch: list[_Pending]) -> bool:
    try:
        with session_scope(app.engine) as session:
            for item in batch:
                audit.record(session, item.event, item.actor[:64], item.outcome,
                             study_instance_uid=item.study_instance_uid, detail=item.detail,
                             at=item.at)
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("audit records=%d events=%s failed reason=%r", len(batch),
                     ",".join(sorted({item.event for item in batch})), exc.__class__.__name__)
        return False
    return True


def record_quietly(app: App, event: str, actor: str, outcome: str, *,
                   study_instance_uid: str | None = None, detail: str = "",
                   queued: bool = False) -> bool:
    """Write one audit record in a transaction of its own; ``False`` when it could not be.

    Parameters
    ----------
    app : App
        The node.
    event, actor, outcome, study_instance_uid, detail
        As :func:`storage.audit.record`; never PHI.
    queued : bool
        Hand it to the node's :class:`AuditWriter` when one runs (see the
        module notes) instead of committing it before returning.

    Returns
    -------
    bool
        Whether the record was committed (or queued).
    """
    item = _Pending(event, actor, outcome, study_instance_uid, detail)
    writer = _WRITERS.get(app.engine)
    if queued and writer is not None:
        writer.submit(item)
        return True
    if _write(app, [item]):
        return True
    if writer is not None:  # the database is down or locked: the writer keeps trying (T28)
        writer.submit(item)
    return False


def forward_outcome(session: Session, job: jobs.JobRecord, closed: jobs.JobRecord | None,
                    error: str, actor: str) -> None:
    """Audit one closed forward attempt in the transaction that closed it.

    ``forward`` with the destination, the counts and the state the job is
    left in; a success once every instance was delivered, a failure when
    the attempt ended with an error or the job failed.
    """
    if closed is None:
        return
    ok = closed.state is JobState.DONE or (closed.state is JobState.PENDING and not error)
    detail = (f"job={job.id} destination={job.destination} state={closed.state.value} "
              f"sent={closed.sent} failed={closed.failed} pending={closed.pending} "
              f"attempt={closed.attempts} confirmed_by={closed.confirmed_by or '-'}"
              + (f" reason={error[:200]}" if error else ""))
    audit.record(session, "forward", actor, "success" if ok else "failure",
                 study_instance_uid=job.study_instance_uid, detail=detail)
