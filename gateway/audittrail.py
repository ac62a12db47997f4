"""What the node audits, and how the network side writes records without failing a request.

RELIABILITY.md I5 and issue "audit trail": one record for every
association accepted or rejected, store, query, retrieve, move, forward,
re-identification, release and deletion; who (a calling AE title, the
operating-system user of a command), what (the event and, where one study
is concerned, its remapped StudyInstanceUID), when (UTC), outcome. Never
PHI: details quote peer slugs, addresses, counts, statuses and remapped
UIDs only (:mod:`storage.audit`).

Where each record is written, and its volume:

- ``association-accepted`` / ``association-rejected``: when the A-ASSOCIATE-RQ
  is decided (:mod:`gateway.scp`), one per association;
- ``store``: by the ingest group commit, in the transaction that indexes the
  instances, one per (sender, study) of each committed batch with the count
  of instances (``instances=N``): not one per instance, so a 2,000-image
  study adds a few dozen rows, and no write on the receiving thread;
  ``store-refused`` for a C-STORE answered with a failure, ``quarantine``
  for an instance set aside;
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
logged (without the record's detail) and the request goes on.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import storage.audit as audit
import storage.jobs as jobs
from storage.db import session_scope
from storage.errors import StorageError
from storage.queue_models import JobState

from .app import App

__all__ = ["forward_outcome", "record_quietly"]

logger = logging.getLogger(__name__)


def record_quietly(app: App, event: str, actor: str, outcome: str, *,
                   study_instance_uid: str | None = None, detail: str = "") -> bool:
    """Write one audit record in a transaction of its own; ``False`` when it could not be.

    Parameters
    ----------
    app : App
        The node.
    event, actor, outcome, study_instance_uid, detail
        As :func:`storage.audit.record`; never PHI.

    Returns
    -------
    bool
        Whether the record was committed.
    """
    try:
        with session_scope(app.engine) as session:
            audit.record(session, event, actor[:64], outcome,
                         study_instance_uid=study_instance_uid, detail=detail)
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("audit event=%s actor=%r failed reason=%r", event, actor,
                     exc.__class__.__name__)
        return False
    return True


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
              f"attempt={closed.attempts}" + (f" reason={error[:200]}" if error else ""))
    audit.record(session, "forward", actor, "success" if ok else "failure",
                 study_instance_uid=job.study_instance_uid, detail=detail)
