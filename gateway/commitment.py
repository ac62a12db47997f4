"""Storage Commitment results received: the SCU's side of N-EVENT-REPORT (PS3.4 J.3.3).

The forwarder asks a destination to commit what it delivered (N-ACTION,
:mod:`gateway.confirm`); the destination answers with an N-EVENT-REPORT of
the Storage Commitment Push Model SOP class (1.2.840.10008.1.20.1) about
its well-known instance (1.2.840.10008.1.20.1.1): Event Type ID 1, every
referenced instance committed (Referenced SOP Sequence); 2, failures exist
(Failed SOP Sequence, each with a Failure Reason). It may send it on the
request's own association, or open an association to the node, proposing
the SCP role for itself through SCP/SCU Role Selection Negotiation (PS3.4
J.2.1 and J.3.3.1.3: the SCU accepts such an association). The listener
supports the SOP class for that only (:data:`ACCEPTOR_ROLES`: the
requestor may be the SCP, the node the SCU), so a caller that proposes to
be the SCU of Storage Commitment gets the context rejected, and an
N-ACTION (from a caller that proposed no roles) is refused with 0x0124
(:func:`refuse_action`): the node commits nothing for others.

:func:`handle_event_report` records the result under its Transaction UID
(:mod:`storage.commitments`) and answers Success; the forwarder reads it
from there. On the listener only a registered peer with the ``destination``
role may report, and only about a transaction sent to it (same AE title):
otherwise 0x0124 (refused, not authorised, audited) or, for a transaction
unknown or not its own, 0x0115 (invalid argument value: the Transaction UID)
and a log line. A report about another instance than the well-known one
gets 0x0112, an unknown event type 0x0113, an Event Information that cannot
be read 0x0110 (PS3.7 10.1.1.1.8). Logs name the transaction, the peer and
counts, never an instance of a patient.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset

import storage.commitments as commitments
import storage.peers as peers
from storage.db import session_scope

from .app import App
from .policy import Decision, record_refusal

__all__ = [
    "ACCEPTOR_ROLES", "EVENT_ALL_COMMITTED", "EVENT_FAILURES_EXIST", "PUSH_MODEL",
    "PUSH_MODEL_INSTANCE", "Report", "handle_event_report", "read_report", "refuse_action",
]

logger = logging.getLogger(__name__)

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5)
PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
#: (scu_role, scp_role) the listener accepts from a requestor: only that it is the SCP
ACCEPTOR_ROLES = (False, True)
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_EVENT_TYPE = 0x0113
INVALID_ARGUMENT_VALUE = 0x0115
NOT_AUTHORISED = 0x0124


@dataclass(frozen=True)
class Report:
    """What an N-EVENT-REPORT's Event Information says (UIDs as the destination knows them)."""

    transaction_uid: str
    committed: tuple[str, ...]
    failed: Mapping[str, int | None]


def read_report(info: Dataset) -> Report:
    """Read Transaction UID, Referenced SOP Sequence and Failed SOP Sequence (PS3.4 J.3.3).

    Raises
    ------
    ValueError
        When the Transaction UID is missing; any error pydicom raises while
        decoding the dataset passes through.
    """
    transaction_uid = str(info.get("TransactionUID", "") or "").strip()
    if not transaction_uid:
        raise ValueError("Transaction UID (0008,1195) is missing")
    committed = tuple(str(item.get("ReferencedSOPInstanceUID", "")).strip()
                      for item in info.get("ReferencedSOPSequence", None) or [])
    failed: dict[str, int | None] = {}
    for item in info.get("FailedSOPSequence", None) or []:
        reason = item.get("FailureReason", None)
        failed[str(item.get("ReferencedSOPInstanceUID", "")).strip()] = (
            None if reason is None else int(reason))
    return Report(transaction_uid, committed, failed)


def _reporters(app: App, assoc: Any, calling_ae: str, destination: str | None) -> set[str]:
    """The destination peers this association may report for (empty: refused)."""
    if destination is not None:  # the forwarder's own association with its destination
        return {destination}
    decision: Decision | None = getattr(assoc, "gateway_decision", None)
    if decision is None or decision.peer_slug is None:
        return set()
    with session_scope(app.engine, readonly=True) as session:
        return {peer.slug for peer in peers.by_ae_title(session, calling_ae)
                if "destination" in peer.roles}


def handle_event_report(event: Any, app: App,
                        destination: str | None = None) -> tuple[int, Dataset | None]:
    """EVT_N_EVENT_REPORT: record a Storage Commitment result (see the module docstring).

    Parameters
    ----------
    event : pynetdicom.events.Event
        The N-EVENT-REPORT request.
    app : App
        The node.
    destination : str or None
        On the forwarder's association, the destination peer it was opened
        to; ``None`` on the listener, where the caller's admission decides.

    Returns
    -------
    tuple[int, None]
        The N-EVENT-REPORT status (PS3.7 10.1.1.1.8) and no Event Reply.
    """
    assoc = event.assoc
    request = event.request
    calling_ae = str((assoc.acceptor if destination else assoc.requestor).ae_title).strip()
    allowed = _reporters(app, assoc, calling_ae, destination)
    reporter = destination or calling_ae
    if not allowed:
        record_refusal(app, "commitment-report-refused", calling_ae,
                       "peer has no destination role")
        return NOT_AUTHORISED, None
    if str(request.AffectedSOPInstanceUID) != PUSH_MODEL_INSTANCE:
        logger.warning("commitment report from=%r status=0x%04X reason='not the push model "
                       "instance'", reporter, NO_SUCH_SOP_INSTANCE)
        return NO_SUCH_SOP_INSTANCE, None
    event_type = int(request.EventTypeID or 0)
    if event_type not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        logger.warning("commitment report from=%r status=0x%04X event_type=%d", reporter,
                       NO_SUCH_EVENT_TYPE, event_type)
        return NO_SUCH_EVENT_TYPE, None
    try:
        report = read_report(event.event_information)
    except Exception as exc:  # anything pydicom raises on a bad dataset: one status, no values
        logger.warning("commitment report from=%r status=0x%04X reason=%r", reporter,
                       PROCESSING_FAILURE, type(exc).__name__)
        return PROCESSING_FAILURE, None
    now = datetime.now(UTC)
    with session_scope(app.engine) as session:
        known = commitments.get(session, report.transaction_uid)
        record = (commitments.answer(session, report.transaction_uid, known.destination,
                                     event_type, report.committed, report.failed, now)
                  if known is not None and known.destination in allowed else None)
    if record is None:
        logger.warning("commitment report from=%r transaction=%r status=0x%04X "
                       "reason='unknown transaction'", reporter, report.transaction_uid[:64],
                       INVALID_ARGUMENT_VALUE)
        return INVALID_ARGUMENT_VALUE, None
    late = (now - record.requested_at).total_seconds()
    logger.info("commitment report from=%s job=%d transaction=%s event_type=%d committed=%d "
                "failed=%d after=%.1fs", record.destination, record.job_id, record.transaction_uid,
                event_type, record.committed or 0, record.failed or 0, late)
    return SUCCESS, None


def refuse_action(event: Any, app: App) -> tuple[int, Dataset | None]:
    """EVT_N_ACTION: the node is no Storage Commitment SCP; 0x0124, audited."""
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    record_refusal(app, "commitment-request-refused", calling_ae, "the node commits nothing")
    return NOT_AUTHORISED, None
