"""Confirming a delivery after its last C-STORE: Storage Commitment, else C-FIND, else statuses.

ARCHITECTURE.md, routing and forwarding (T29: local purge only after
Storage Commitment). The forwarder proposes :func:`contexts` on each job's
association and, once the job's instances are sent without error, calls
:func:`confirm_delivery`, which confirms what the job delivered (its items
``sent``, this attempt's and earlier ones') the first way the destination
accepted:

1. ``storage-commitment``, the Storage Commitment Push Model (PS3.4 J.3):
   an N-ACTION, Action Type ID 1, with a new Transaction UID and a
   Referenced SOP Sequence of the delivered instances, under the UIDs the
   destination received (re-keyed for a destination with a pseudonym space
   of its own, as :func:`gateway.forwarder._dataset` sent them). The
   request is recorded (:mod:`storage.commitments`) before it is sent; the
   result comes by N-EVENT-REPORT on this association or on one the
   destination opens to the node (:mod:`gateway.commitment`), here or at
   another node sharing the database, and is read back from there. The
   wait lasts at most ``forward.commit_timeout_seconds``, and the job's
   lease is renewed meanwhile. Instances the destination did not commit go
   back to pending: the attempt ends with an error, so they are sent again
   after the job's back-off. No answer in time, or an N-ACTION refused:
   the next way, noted (``c-find (commitment unanswered)``); a late result
   is still recorded. An N-ACTION without any response (a destination
   that does not know the node may drop it: Orthanc does) ends the
   association, which is then not trusted with a query either.
2. ``c-find``, Study Root Query/Retrieve FIND at the IMAGE level (PS3.4
   C.6.2), one query per series (the hierarchical search of C.4.1.2.2.1
   takes a single value for each key above the level) with the study's
   and series' UIDs as the destination has them, returning
   SOPInstanceUID. Confirmed when every delivered instance is found;
   those missing go back to pending. A query that fails gives way to 3.
3. ``c-store-status``: the C-STORE statuses alone, as they were recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

import storage.commitments as commitments
import storage.jobs as jobs
from anonymizer import KeyedPseudonyms
from storage.db import session_scope
from storage.queue_models import ItemState

from .app import App
from .commitment import PUSH_MODEL, PUSH_MODEL_INSTANCE, handle_event_report

__all__ = ["C_FIND", "C_STORE_STATUS", "STORAGE_COMMITMENT", "Confirmation",
           "confirm_delivery", "contexts", "event_handlers"]

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT = "storage-commitment"
C_FIND = "c-find"
C_STORE_STATUS = "c-store-status"

#: N-ACTION Action Type ID: Request Storage Commitment (PS3.4 J.3.2)
_REQUEST_COMMITMENT = 1
_SUCCESS = 0x0000
_PENDING = (0xFF00, 0xFF01)
#: how often the database is asked for the result, seconds
_POLL = 0.1
_SYNTAXES: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass(frozen=True)
class Confirmation:
    """How the delivery was confirmed; ``error`` when instances went back to pending."""

    confirmed_by: str
    error: str = ""


def contexts() -> list[PresentationContext]:
    """The contexts to propose besides storage: Storage Commitment, Study Root FIND."""
    return [build_context(PUSH_MODEL, _SYNTAXES),
            build_context(StudyRootQueryRetrieveInformationModelFind, _SYNTAXES)]


def event_handlers(app: App, destination: str) -> list[Any]:
    """Handlers for the job's association: a result sent on it is recorded as on the listener."""
    return [(evt.EVT_N_EVENT_REPORT, handle_event_report, [app, destination])]


def _noted(way: str, note: str) -> str:
    return f"{way} ({note})" if note else way


def confirm_delivery(app: App, assoc: Association, job: jobs.JobRecord, owner: str,
                     space: KeyedPseudonyms | None) -> Confirmation:
    """Confirm what ``job`` delivered, the first way the destination accepted (module docstring).

    Parameters
    ----------
    app : App
        The node.
    assoc : Association
        The job's association, established, its instances sent.
    job : storage.jobs.JobRecord
        The leased job.
    owner : str
        The lease holder (renewed while waiting).
    space : KeyedPseudonyms or None
        The destination's own pseudonym space, if it has one: the UIDs it
        received are the stored ones re-keyed in it.
    """
    with session_scope(app.engine, readonly=True) as session:
        delivered = commitments.delivered(session, job.id)
        current = jobs.get(session, job.id)
    if not delivered or current is None or current.failed:
        return Confirmation(C_STORE_STATUS)  # nothing to confirm, or the job fails anyway

    def theirs(uid: str) -> str:
        return space.uid(uid) if space is not None else uid

    ours = {theirs(item.sop_instance_uid): item for item in delivered}
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    note = ""
    if PUSH_MODEL in accepted:
        outcome = _commit(app, assoc, job, owner, ours)
        if isinstance(outcome, Confirmation):
            return outcome
        note = outcome
    if StudyRootQueryRetrieveInformationModelFind in accepted and assoc.is_established:
        series = {theirs(item.series_instance_uid) for item in delivered}
        found = _find(assoc, theirs(job.study_instance_uid), sorted(series))
        if found is not None:
            missing = [uid for uid in ours if uid not in found]
            logger.info("forward job=%d confirm=c-find found=%d missing=%d", job.id,
                        len(ours) - len(missing), len(missing))
            if not missing:
                return Confirmation(_noted(C_FIND, note))
            _back_to_pending(app, job.id, (ours[uid].sop_instance_uid for uid in missing))
            return Confirmation(_noted(C_FIND, note),
                                f"c-find: {len(missing)} instance(s) not found at the "
                                "destination, back to pending")
        note = note or "c-find failed"
    return Confirmation(_noted(C_STORE_STATUS, note))


def _commit(app: App, assoc: Association, job: jobs.JobRecord, owner: str,
            ours: dict[str, commitments.Delivered]) -> Confirmation | str:
    """Storage Commitment: the confirmation, or a note on why it gave none."""
    transaction_uid = str(generate_uid(prefix=None))
    with session_scope(app.engine) as session:
        commitments.request(session, transaction_uid, job.id, job.destination, list(ours),
                            datetime.now(UTC))
    action = Dataset()
    action.TransactionUID = transaction_uid
    action.ReferencedSOPSequence = [_reference(item.sop_class_uid, uid)
                                    for uid, item in ours.items()]
    status, _reply = assoc.send_n_action(action, _REQUEST_COMMITMENT, PUSH_MODEL,
                                         PUSH_MODEL_INSTANCE)
    code = int(status.Status) if status is not None and "Status" in status else None
    if code != _SUCCESS:
        logger.warning("forward job=%d transaction=%s commitment=refused status=%s", job.id,
                       transaction_uid, "none" if code is None else f"0x{code:04X}")
        if code is None:  # no response: the association is not to be trusted with more
            assoc.abort()
        return "commitment refused"
    started = time.monotonic()
    record = _wait(app, job.id, owner, transaction_uid)
    if record is None:
        logger.warning("forward job=%d transaction=%s commitment=unanswered waited=%.1fs",
                       job.id, transaction_uid, time.monotonic() - started)
        return "commitment unanswered"
    failed = list(record.failures)
    logger.info("forward job=%d transaction=%s commitment=answered committed=%d failed=%d "
                "waited=%.1fs", job.id, transaction_uid, record.committed or 0, len(failed),
                time.monotonic() - started)
    if not failed:
        return Confirmation(STORAGE_COMMITMENT)
    _back_to_pending(app, job.id, (ours[uid].sop_instance_uid for uid in failed if uid in ours))
    reasons = sorted({f"0x{r:04X}" for r in record.failures.values() if r is not None})
    return Confirmation(STORAGE_COMMITMENT,
                        f"storage commitment: {len(failed)} instance(s) not committed"
                        f"{' (' + ', '.join(reasons) + ')' if reasons else ''}, back to pending")


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _wait(app: App, job_id: int, owner: str,
          transaction_uid: str) -> commitments.CommitmentRecord | None:
    """Poll for the result until ``forward.commit_timeout_seconds``, renewing the lease."""
    forward = app.settings.forward
    deadline = time.monotonic() + forward.commit_timeout_seconds
    renew_every = max(1.0, forward.lease_seconds / 3)
    renewed = time.monotonic()
    while True:
        with session_scope(app.engine, readonly=True) as session:
            record = commitments.get(session, transaction_uid)
        if record is not None and record.answered_at is not None:
            return record
        now = time.monotonic()
        if now >= deadline:
            return None
        if now - renewed >= renew_every:
            with session_scope(app.engine) as session:
                if not jobs.renew_lease(session, job_id, owner, datetime.now(UTC),
                                        forward.lease_seconds):
                    return None  # another forwarder holds the job now
            renewed = now
        time.sleep(min(_POLL, deadline - now))


def _find(assoc: Association, study_instance_uid: str,
          series_instance_uids: list[str]) -> set[str] | None:
    """The SOP Instance UIDs the destination has of these series; ``None`` if a query failed."""
    found: set[str] = set()
    for series_instance_uid in series_instance_uids:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_instance_uid
        query.SeriesInstanceUID = series_instance_uid
        query.SOPInstanceUID = ""
        for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind):
            code = int(status.Status) if status is not None and "Status" in status else None
            if code in _PENDING and identifier is not None:
                found.add(str(identifier.get("SOPInstanceUID", "")).strip())
            elif code != _SUCCESS:
                logger.warning("c-find for confirmation ended with status %s",
                               "none" if code is None else f"0x{code:04X}")
                if code is None:
                    assoc.abort()
                return None
    return found


def _back_to_pending(app: App, job_id: int, sop_instance_uids: Iterable[str]) -> None:
    """Unconfirmed instances are sent again at the job's next attempt."""
    with session_scope(app.engine) as session:
        jobs.record_items(session, job_id,
                          [(uid, ItemState.PENDING, None) for uid in sop_instance_uids])
