"""A C-STORE dataset being received: capped while it streams, removed if left half-received.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom streams a C-STORE's dataset
to a temporary file as its P-DATA-TF PDUs arrive (``dimse_messages.py``,
``DIMSEMessage.decode_msg``) and hands the file to the handler once the
last fragment is in. When the association is aborted, times out or loses
its connection before that, the file stays open and on disk
(RELIABILITY T08, T25: "pynetdicom leaves them"); start-up repair
(:meth:`gateway.node.Node.repair`) would only sweep it at the next start.
On EVT_CONN_CLOSE the message being received, if any, has its file closed
and removed. A complete message is no longer there (pynetdicom resets it
once queued), so a dataset handed to the C-STORE handler is never touched.

On EVT_PDU_RECV (in the association's reactor thread, before the PDU's
data is written) the dataset being received is measured: once it is past
``limits.max_dataset_mb`` the association is aborted (A-ABORT, source 0,
service-user: PS3.8 7.3.1 lets either user abort at any time), so that a
peer streaming without end (an item stream with no delimiter,
RELIABILITY T14) fills neither the disk nor anything else; the file goes
at the close, as above. A dataset that ends under way to the cap is
answered 0xA700 by the C-STORE handler instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .app import App
from .audittrail import record_quietly

__all__ = ["cap_receive", "discard_partial_receive"]

logger = logging.getLogger(__name__)


def discard_partial_receive(event: Any) -> None:
    """EVT_CONN_CLOSE: close and delete the dataset file of an unfinished C-STORE."""
    message = getattr(event.assoc.dimse, "message", None)
    stream = getattr(message, "_data_set_file", None)
    path = getattr(message, "_data_set_path", None)
    if stream is None or not isinstance(path, Path):
        return
    stream.close()
    path.unlink(missing_ok=True)
    logger.info("partial receive discarded file=%s", path.name)


def cap_receive(event: Any, app: App) -> None:
    """EVT_PDU_RECV: abort the association once the dataset being received exceeds the cap.

    The refusal is audited (``store-refused``, queued: this is the reactor thread).
    """
    max_bytes = app.settings.limits.max_dataset_mb * 1024 * 1024
    message = getattr(event.assoc.dimse, "message", None)
    stream = getattr(message, "_data_set_file", None)
    if message is None or stream is None or getattr(message, "gateway_capped", False):
        return
    try:
        received = stream.tell()
    except ValueError:  # closed meanwhile: the message is over
        return
    if received <= max_bytes:
        return
    message.gateway_capped = True
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    logger.warning("store calling_ae=%r state=aborted reason='dataset exceeds the size limit' "
                   "received_bytes=%d", calling_ae, received)
    record_quietly(app, "store-refused", calling_ae, "failure", queued=True,
                   detail="status=A-ABORT reason=dataset exceeds the size limit")
    event.assoc.acse.send_abort(0x00)  # queued for the reactor, which sends it next
