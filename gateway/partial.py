"""Removing a C-STORE dataset left half-received when its connection closes.

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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["discard_partial_receive"]

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
