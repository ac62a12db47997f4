"""The C-FIND SCP: Patient Root and Study Root Query/Retrieve, FIND (PS3.4 C.4.1).

``handle_find`` is bound to ``evt.EVT_C_FIND``. It checks the caller, parses
the identifier (:mod:`gateway.query`), and streams the index's matches
(:func:`storage.search.stream`): each row becomes a pending response as the
database cursor delivers it, so the first result goes out before the last
match is read. Statuses (PS3.4 C.4.1.1.4, pynetdicom
``QR_FIND_SERVICE_CLASS_STATUS``):

- 0xFF00 pending, one match; 0xFF01 pending, one match, but a key the index
  cannot match on carried a value (it is returned empty);
- 0x0000 success, after the last match (pynetdicom sends it);
- 0xFE00 the caller sent C-CANCEL: checked before every response, the
  stream ends at once and the cursor is closed;
- 0xA700 more matches than ``query.max_results``: the first
  ``max_results`` are sent, then this failure with an Error Comment that
  says so (RELIABILITY.md T23), never a silent truncation. Not 0xB001:
  pynetdicom 3.0 follows a warning with a Success response, which DCMTK
  reports as a protocol error. Also 0xA700 when the database fails;
- 0xA900 the identifier does not fit the model (no or a bad
  QueryRetrieveLevel, a missing higher-level unique key, a malformed key);
- 0xC310 the identifier cannot be decoded;
- 0x0124 refused, not authorised: the caller has no ``query`` role
  (audited).

Pending responses are not yielded to pynetdicom one Dataset at a time:
each is encoded from its row by :class:`gateway.responses.IdentifierEncoder`
and queued as one PDU by :class:`gateway.responses.PendingSender`: the
command set and identifier pynetdicom would have encoded, in one PDU
instead of two, for a fraction of the work (``scripts/bench query``
measures it). A row with a value the encoder
cannot place (too long for its length field), or a request with an
ambiguous VR, goes through pynetdicom as a Dataset instead. The final
response and every failure status still go through pynetdicom.

Backpressure: pynetdicom queues every response for its network thread,
which sends all that is queued before it reads anything from the peer. So
the handler waits, once ``_QUEUED_HIGH`` messages are waiting, until the
queue is empty: memory stays bounded however slowly the caller reads, and
the network thread gets to read a C-CANCEL while the query still runs.

Identifiers are never logged (pynetdicom's identifier logging is off, see
:mod:`gateway.app`); the one log line per query names the calling AE, the
level, the number of matches, the status and the time taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any, Final

from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from storage.errors import StorageError
from storage.search import Scope, stream

from .app import App
from .audittrail import record_quietly
from .policy import Decision, may_query, record_refusal
from .query import (
    MULTI_VALUED,
    Find,
    IdentifierError,
    Root,
    datetime_matching,
    extended_negotiation,
    parse_identifier,
    response_elements,
    to_identifier,
)
from .responses import IdentifierEncoder, PendingSender

__all__ = [
    "CANCEL",
    "NOT_AUTHORISED",
    "OUT_OF_RESOURCES",
    "PENDING",
    "PENDING_WARNING",
    "UNABLE_TO_DECODE",
    "handle_find",
    "handle_sop_extended",
]

logger = logging.getLogger(__name__)

PENDING: Final = 0xFF00
PENDING_WARNING: Final = 0xFF01
CANCEL: Final = 0xFE00
OUT_OF_RESOURCES: Final = 0xA700
UNABLE_TO_DECODE: Final = 0xC310
NOT_AUTHORISED: Final = 0x0124

#: Messages waiting to be sent before the handler waits for them to go.
_QUEUED_HIGH: Final = 32
#: How often the handler looks at the send queue while it waits, in seconds.
_POLL: Final = 0.0005

FindResponse = tuple[int | Dataset, Dataset | None]


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


def handle_sop_extended(event: Any) -> dict[str, bytes]:
    """EVT_SOP_EXTENDED: answer Q/R FIND items (combined date-time matching only)."""
    served = {root.value for root in Root}
    return {uid: extended_negotiation(info) for uid, info in event.app_info.items()
            if str(uid) in served}


def handle_find(event: Any, app: App) -> Iterator[FindResponse]:
    """EVT_C_FIND: stream the matches of one query (see the module notes)."""
    started = time.monotonic()
    assoc = event.assoc
    calling_ae = str(assoc.requestor.ae_title).strip()
    decision: Decision | None = getattr(assoc, "gateway_decision", None)
    if decision is None or not may_query(decision):
        record_refusal(app, "find-refused", calling_ae, "peer has no query role")
        yield _status(NOT_AUTHORISED, "calling AE may not query"), None
        return
    root = Root(str(event.request.AffectedSOPClassUID))
    requested = assoc.requestor.sop_class_extended.get(root.value)
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - pynetdicom raises whatever the decoder raised
        logger.warning("find calling_ae=%r status=0x%04X reason='identifier cannot be decoded'",
                       calling_ae, UNABLE_TO_DECODE)
        yield _status(UNABLE_TO_DECODE, "the identifier cannot be decoded"), None
        return
    try:
        find = parse_identifier(identifier, root, Scope(decision.scope, decision.peer_slug),
                                combined_datetime=datetime_matching(requested))
    except IdentifierError as exc:
        logger.warning("find calling_ae=%r status=0x%04X reason=%r",
                       calling_ae, exc.status, exc.comment)
        record_quietly(app, "find", calling_ae, "failure", queued=True, detail=(
            f"root={root.name.lower()} status=0x{exc.status:04X} reason={exc.comment}"))
        yield _status(exc.status, exc.comment), None
        return
    yield from _matches(event, app, find, calling_ae, started)


def _drain(assoc: Any, timeout: float) -> None:
    """Wait until pynetdicom has sent what is queued, once enough is queued (see notes)."""
    queued = getattr(getattr(assoc, "dul", None), "to_provider_queue", None)
    if queued is None or queued.qsize() < _QUEUED_HIGH:
        return
    deadline = time.monotonic() + timeout
    while queued.qsize() and assoc.is_established and time.monotonic() < deadline:
        time.sleep(_POLL)


def _encoder(event: Any, find: Find, ae_title: str) -> IdentifierEncoder | None:
    """The identifier encoder for this request's transfer syntax (``None``: pydicom's)."""
    syntax = event.context.transfer_syntax
    try:
        return IdentifierEncoder(response_elements(find, ae_title),
                                 implicit_vr=syntax.is_implicit_VR,
                                 little_endian=syntax.is_little_endian, multi_valued=MULTI_VALUED)
    except ValueError:
        return None


def _matches(event: Any, app: App, find: Find, calling_ae: str,
             started: float) -> Iterator[FindResponse]:
    cap = app.settings.query.max_results
    ae_title = app.settings.node.ae_title
    pending = PENDING_WARNING if find.unsupported else PENDING
    encoder = _encoder(event, find, ae_title)
    sender = PendingSender(event.assoc, event.context.context_id, event.request.MessageID,
                           str(event.request.AffectedSOPClassUID), pending)
    sent = 0
    status = 0x0000
    try:
        with closing(stream(app.engine, find.query, limit=cap + 1)) as rows:
            for row in rows:
                _drain(event.assoc, app.settings.limits.network_timeout)
                if not event.assoc.is_established:  # aborted: nobody to answer
                    logger.warning("find calling_ae=%r aborted after %d matches",
                                   calling_ae, sent)
                    return
                if event.is_cancelled:
                    status = CANCEL
                    break
                if sent == cap:
                    status = OUT_OF_RESOURCES
                    break
                sent += 1
                encoded = None if encoder is None else encoder.encode(row)
                if encoded is None:
                    yield pending, to_identifier(row, find, ae_title)
                else:
                    sender.send(encoded)
            else:
                if event.is_cancelled:
                    status = CANCEL
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("find calling_ae=%r status=0x%04X reason=%r", calling_ae,
                     OUT_OF_RESOURCES, exc.__class__.__name__)
        yield _status(OUT_OF_RESOURCES, "the index cannot be read"), None
        return
    logger.info("find calling_ae=%r root=%s level=%s matches=%d status=0x%04X elapsed=%.3fs",
                calling_ae, find.root.name.lower(), find.query.level.value, sent, status,
                time.monotonic() - started)
    record_quietly(app, "find", calling_ae, "success" if status != OUT_OF_RESOURCES else "failure",
                   queued=True, detail=(f"root={find.root.name.lower()} "
                                        f"level={find.query.level.value} matches={sent} "
                                        f"status=0x{status:04X}"))
    if status == CANCEL:
        yield CANCEL, None
    elif status == OUT_OF_RESOURCES:
        yield _status(OUT_OF_RESOURCES, f"more than {cap} matches; narrow the query"), None
