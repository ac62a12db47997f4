"""The DIMSE handlers: C-ECHO and C-STORE (PS3.4 Annex A and B).

The network thread only spools (STYLE 1, ARCHITECTURE durability contract
1): the C-STORE handler checks the received header
(:func:`gateway.receive.check_received`, while another thread fsyncs the
received file), moves pynetdicom's file into the spool (fsync, rename,
fsync of the folder) and answers Success only then. It does no
de-identification and no index writes; the ingest workers do. Statuses (PS3.4 Table B.2-1):

- 0x0000 the bytes are durable in the spool;
- 0xA700 out of resources: the disk is full or the size limit was hit;
- 0xA900 the dataset does not match the SOP class or the request's UIDs;
- 0xC000 the dataset cannot be understood (parse failure, truncation);
- 0x0124 refused, not authorised: the peer has no ``source`` role.

A refusal carries an Error Comment (0000,0902) that names the rule, never a
value, and leaves a ``store-refused`` audit record; successful stores are
audited by the ingest group commit (:mod:`gateway.audittrail`). Logs name
the replaced SOP Instance UID, never the original. An accepted instance is
logged at DEBUG only: the ingest worker logs its outcome at INFO, under the
same replaced UID, so the receiving thread spends no time formatting and
writing a second line per instance (nor computing the replaced UID).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from pydicom.dataset import Dataset

from storage.errors import StorageFull
from storage.spool import SpoolEntry, SpoolMeta

from .app import App
from .audittrail import record_quietly
from .policy import Decision, may_store, record_refusal
from .receive import OUT_OF_RESOURCES, Verdict, check_received

__all__ = ["handle_echo", "handle_store", "SUCCESS", "NOT_AUTHORISED"]

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
NOT_AUTHORISED = 0x0124
_MB = 1024 * 1024


def _refusal(verdict: Verdict) -> Dataset:
    status = Dataset()
    status.Status = verdict.status
    status.ErrorComment = verdict.comment[:64]
    return status


def handle_echo(event: Any) -> int:
    """C-ECHO: Success (PS3.4 A.4)."""
    return SUCCESS


def handle_store(event: Any, app: App) -> int | Dataset:
    """C-STORE: check the header, make the bytes durable in the spool, then Success."""
    started = time.monotonic()
    assoc = event.assoc
    decision: Decision | None = getattr(assoc, "gateway_decision", None)
    calling_ae = str(assoc.requestor.ae_title).strip()
    request = event.request
    sop_class = str(request.AffectedSOPClassUID)
    sop_instance = str(request.AffectedSOPInstanceUID)

    def shown() -> str:  # the replaced UID: safe to log; computed only when logged
        return app.lookup.uid(sop_instance)

    if decision is None or not may_store(decision):
        record_refusal(app, "store-refused", calling_ae, "peer has no source role")
        return _refusal(Verdict(NOT_AUTHORISED, "calling AE may not store"))
    path = event.dataset_path
    meta = SpoolMeta(
        calling_ae_title=calling_ae,
        called_ae_title=str(assoc.acceptor.ae_title).strip(),
        source_peer=decision.peer_slug,
        received_at=datetime.now(timezone.utc),
        peer_address=str(assoc.requestor.address),
    )

    def verify() -> Verdict | None:
        return check_received(path, sop_class, sop_instance,
                              app.settings.limits.max_dataset_mb * _MB,
                              app.settings.anonymizer.max_sequence_depth)

    try:
        # the header is checked while another thread fsyncs the bytes
        accepted: SpoolEntry | Verdict = app.spool.accept(path, meta, verify)
    except StorageFull:
        logger.error("store sop=%s status=0xA700 reason='spool disk full'", shown())
        accepted = Verdict(OUT_OF_RESOURCES, "out of disk space")
    except OSError as exc:
        logger.error("store sop=%s status=0xA700 reason=%r", shown(), exc.strerror)
        accepted = Verdict(OUT_OF_RESOURCES, "cannot write the spool")
    else:
        if isinstance(accepted, Verdict):
            logger.warning("store sop=%s calling_ae=%r status=0x%04X reason=%r",
                           shown(), calling_ae, accepted.status, accepted.comment)
    if isinstance(accepted, Verdict):
        record_quietly(app, "store-refused", calling_ae, "failure", detail=(
            f"sop={shown()} status=0x{accepted.status:04X} reason={accepted.comment}"))
        return _refusal(accepted)
    app.wake.set()
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("store sop=%s calling_ae=%r status=0x0000 elapsed=%.3fs",
                     shown(), calling_ae, time.monotonic() - started)
    return SUCCESS
