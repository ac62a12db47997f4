"""The C-STORE sub-operations of a C-MOVE or C-GET: contexts, files from disk, outcomes.

Presentation contexts (PS3.8 9.3.2.2, at most 128): for each SOP class
among the instances, the transfer syntaxes its files are stored in, as
stored (compressed pixel data is sent as it is); for an uncompressed
little endian file the other uncompressed little endian syntax too
(pynetdicom converts between them), and for any other file a fallback
context with Explicit and Implicit VR Little Endian, used only when the
destination rejects the stored syntax. The fallback decompresses the pixel
data with pydicom (keeping the SOP Instance UID); pixel data that the
installed pydicom handlers cannot decode fails that one sub-operation.

Files stream from disk: each is read when its turn comes, its large values
(pixel data) deferred until pynetdicom encodes them, so one instance at a
time is in memory. A file that cannot be read, or that no accepted context
fits, fails its sub-operation: pynetdicom counts it as failed and lists its
SOP Instance UID in the Failed SOP Instance UID List.

:class:`Tally` counts the C-STORE responses of a sub-association (bound to
``EVT_DIMSE_RECV``), for the node's own log line and audit record; the
counts in the C-MOVE/C-GET responses are pynetdicom's.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from storage.filestore import FileStore
from storage.records import PeerRecord
from storage.retrieval import ToSend, syntaxes_by_class

from . import directsend, reactorpause

__all__ = ["MAX_CONTEXTS", "Tally", "accepted_syntaxes", "contexts_for", "load", "open_destination"]

logger = logging.getLogger(__name__)

#: PS3.8 9.3.2.2: an A-ASSOCIATE-RQ carries at most 128 presentation contexts.
MAX_CONTEXTS: Final = 128
#: Values larger than this stay in the file until they are encoded.
DEFER_SIZE: Final = 64 * 1024
#: What every destination must accept (PS3.5 10.1): the fallback of last resort.
UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_STORE_RSP: Final = 0x8001


def _plain(syntax: str) -> bool:
    """An uncompressed little endian syntax: pynetdicom converts among these."""
    return syntax in UNCOMPRESSED


def contexts_for(instances: Sequence[ToSend]) -> list[PresentationContext]:
    """The presentation contexts to propose for ``instances`` (see the module notes).

    Contexts with the stored syntaxes come first; fallbacks are dropped
    before them when there are more than :data:`MAX_CONTEXTS`.
    """
    primary: list[PresentationContext] = []
    fallback: list[PresentationContext] = []
    for sop_class, syntaxes in syntaxes_by_class(instances).items():
        if any(_plain(syntax) for syntax in syntaxes):
            primary.append(build_context(sop_class, list(UNCOMPRESSED)))
        others = [syntax for syntax in syntaxes if not _plain(syntax)]
        primary.extend(build_context(sop_class, [syntax]) for syntax in others)
        if others and not any(_plain(syntax) for syntax in syntaxes):
            fallback.append(build_context(sop_class, list(UNCOMPRESSED)))
    return (primary + fallback)[:MAX_CONTEXTS]


def accepted_syntaxes(contexts: Iterable[PresentationContext]) -> dict[str, set[str]]:
    """SOP Class UID -> the transfer syntaxes accepted for it, where this node is the SCU.

    For a C-MOVE sub-association (this node requested it) that is every
    accepted context; on a C-GET association only those whose SCP/SCU role
    selection made the caller the Storage SCP.
    """
    accepted: dict[str, set[str]] = {}
    for cx in contexts:
        if cx.as_scu and cx.abstract_syntax is not None:
            accepted.setdefault(str(cx.abstract_syntax), set()).update(
                str(syntax) for syntax in cx.transfer_syntax)
    return accepted


def _failing(item: ToSend) -> Dataset:
    """A dataset pynetdicom cannot send: it counts the sub-operation as failed, with its UID."""
    ds = Dataset()
    ds.SOPInstanceUID = item.sop_instance_uid
    return ds


def load(store: FileStore, item: ToSend, accepted: Mapping[str, set[str]]) -> Dataset:
    """The dataset of one sub-operation, read from its stored file (see the module notes).

    Returns the file as stored when an accepted context fits it (as stored,
    or converted between uncompressed little endian syntaxes by
    pynetdicom), decompressed when only an uncompressed one does, and
    otherwise a dataset that fails the sub-operation. Never raises.
    """
    try:
        ds = dcmread(store.path_of(item.file_path), defer_size=DEFER_SIZE)
        syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    except Exception as exc:  # noqa: BLE001 - any unreadable file fails only its sub-operation
        logger.warning("retrieve file=%s sub-operation=failed reason=%r", item.file_path,
                       f"file cannot be read ({exc.__class__.__name__})")
        return _failing(item)
    offered = accepted.get(item.sop_class_uid, set())
    if syntax in offered or (_plain(syntax) and any(_plain(s) for s in offered)):
        return ds
    if not any(_plain(s) for s in offered):
        logger.warning("retrieve file=%s sub-operation=failed reason=%r", item.file_path,
                       "no accepted presentation context")
        return _failing(item)
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 - a missing or failing pixel handler
        logger.warning("retrieve file=%s sub-operation=failed reason=%r", item.file_path,
                       f"cannot decompress {syntax.name} ({exc.__class__.__name__})")
        return _failing(item)
    return ds


class Tally:
    """C-STORE response statuses seen on an association, by category (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = 0
        self.warning = 0
        self.failed = 0

    def on_message(self, event: Any) -> None:
        """EVT_DIMSE_RECV: count a C-STORE-RSP's status."""
        command = event.message.command_set
        if command is None or command.get("CommandField") != _STORE_RSP:
            return
        category = code_to_category(int(command.get("Status", 0xC000)))
        with self._lock:
            if category == "Success":
                self.completed += 1
            elif category == "Warning":
                self.warning += 1
            else:
                self.failed += 1


def _nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: no Nagle's algorithm on the sub-association's socket."""
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_destination(ae: Any, destination: PeerRecord, contexts: list[PresentationContext],
                     tally: Tally, max_pdu: int,
                     tls: tuple[ssl.SSLContext, str] | None = None) -> Association:
    """Request the C-MOVE sub-association with ``destination``, from the peer table's address.

    Returns the association whether or not it was established; one that
    was not has its socket closed.
    """
    assoc: Association = ae.associate(
        destination.host, destination.port, contexts=contexts,
        ae_title=destination.ae_title, max_pdu=max_pdu, tls_args=tls,
        evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_CONN_OPEN, directsend.install),
                      (evt.EVT_CONN_OPEN, reactorpause.install),
                      (evt.EVT_DIMSE_RECV, tally.on_message)],
    )
    if not assoc.is_established:
        raw = getattr(assoc, "gateway_socket", None)  # see gateway.retrieve.RetrieveAE
        if raw is not None:
            raw.close()
        sock = assoc.dul.socket
        if sock is not None:
            sock.close()
    return assoc
