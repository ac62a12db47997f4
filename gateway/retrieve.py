"""The C-MOVE and C-GET SCPs: Patient Root and Study Root Query/Retrieve (PS3.4 C.4.2, C.4.3).

``handle_move`` is bound to ``evt.EVT_C_MOVE`` and ``handle_get`` to
``evt.EVT_C_GET``; both follow pynetdicom's generator protocol (C-MOVE:
the destination, then the number of sub-operations, then ``(status,
dataset)`` pairs; C-GET: the number, then the pairs).

Request identifier (PS3.4 C.4.2.2.1): QueryRetrieveLevel PATIENT (Patient
Root only), STUDY, SERIES or IMAGE, and the unique keys at that level and
above. Patient Root: PatientID (one value); both models:
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, a list of UIDs at the
retrieve level and a single one above it. Missing or otherwise: 0xA900.
Other keys are ignored (an identifier holds only unique keys). Every
instance below the named entities that the caller's scope lets it find is
sent (:mod:`storage.retrieval`): outside its scope an identifier matches
nothing, so the answer is Success with no sub-operation, exactly as for a
UID that does not exist, and nothing tells the caller that the entity is
there.

Who may retrieve: a registered peer with the ``retrieve`` role, otherwise
0x0124 "Refused: Not Authorised" (audited). A C-MOVE sends only to a peer
with the ``destination`` role, at the host and port in the peer table; the
caller's scope decides which (:func:`gateway.policy.move_destination`):
``all`` any, ``sent``/``routed`` only its own machine (its own entry or a
destination registered with the same host). An unknown Move Destination
(no peer with the ``destination`` role has that AE title) gets 0xA801,
one the caller may not use 0xC801 "Move Destination not allowed"; both
are audited (RELIABILITY.md T24).

Statuses (PS3.4 C.4.2.1.5, C.4.3.1.4): 0xFF00 after each sub-operation,
with the Remaining, Completed, Failed and Warning counts; then 0x0000 when
all completed, 0xB000 when some failed (with the Failed SOP Instance UID
List), 0xA702 when all failed; 0xFE00 on C-CANCEL, checked before each
sub-operation (the counts, Remaining being those not started); 0xA702 when
the move destination cannot be reached (every instance failed, all listed)
or ends the sub-association midway; 0xA701 when the index cannot be read or
more than 65,535 instances match (a response cannot count more: retrieve
fewer at a time); 0xC510 (C-MOVE) or 0xC410 (C-GET) when the identifier
cannot be decoded. If the C-MOVE association itself ends (an A-ABORT, or a
release), the sub-operations stop with it (PS3.4 C.4.2.3.1 leaves this
open).

Sub-operations (:mod:`gateway.suboperations`): one association to the
destination (TCP_NODELAY) with the contexts its files need; a C-GET sends
on the caller's association, over the storage contexts for which SCP/SCU
role selection made the caller the SCP. Each file is read from the store
when its turn comes.

pynetdicom 3.0 requests the sub-association itself, after the handler has
given the number of sub-operations, and answers 0xA801 when it fails. So
that the answer is 0xA702 instead, the handler opens it first and hands it
over through :class:`RetrieveAE` (the node's AE) with the destination's
``opened`` keyword; a C-MOVE refused before any sub-operation hands over
an association that is never used and answers with its failure as the
first status (one sub-operation counted as failed). Checked against the
pynetdicom release in :data:`CHECKED_PYNETDICOM`.

Each retrieve leaves one log line and one audit record (who, model, level,
destination, how many, the outcome), never an identifier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy.exc import SQLAlchemyError

import storage.audit as audit
from storage.db import session_scope
from storage.errors import StorageError
from storage.matching import Single, UidList
from storage.retrieval import ToSend, instances_to_send
from storage.search import Level, Query, Scope

from .app import App
from .policy import Decision, may_retrieve, move_destination, record_refusal
from .query import KEYWORDS, UNIQUE, IdentifierError, Root, parse_identifier
from .suboperations import Tally, accepted_syntaxes, contexts_for, load, open_destination
from .tls import tls_args

__all__ = [
    "CHECKED_PYNETDICOM", "GET_SOP_CLASSES", "MOVE_SOP_CLASSES", "RetrieveAE", "handle_get",
    "handle_move", "parse_retrieve",
]

logger = logging.getLogger(__name__)

#: the pynetdicom release line whose C-MOVE SCP (``_move_scp``) was read for the hand-over
CHECKED_PYNETDICOM: Final = "3.0"

MOVE_SOP_CLASSES: Final = (PatientRootQueryRetrieveInformationModelMove,
                           StudyRootQueryRetrieveInformationModelMove)
GET_SOP_CLASSES: Final = (PatientRootQueryRetrieveInformationModelGet,
                          StudyRootQueryRetrieveInformationModelGet)
_ROOTS: Final = {
    str(PatientRootQueryRetrieveInformationModelMove): Root.PATIENT,
    str(PatientRootQueryRetrieveInformationModelGet): Root.PATIENT,
    str(StudyRootQueryRetrieveInformationModelMove): Root.STUDY,
    str(StudyRootQueryRetrieveInformationModelGet): Root.STUDY,
}

SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
CANCEL: Final = 0xFE00
WARNING: Final = 0xB000
UNABLE_TO_CALCULATE: Final = 0xA701
UNABLE_TO_PERFORM: Final = 0xA702
DESTINATION_NOT_ALLOWED: Final = 0xC801
NOT_AUTHORISED: Final = 0x0124
UNABLE_TO_DECODE: Final = {"move": 0xC510, "get": 0xC410}
#: Number of Remaining/Completed Sub-operations are US: no retrieve can count more
MAX_SUBOPERATIONS: Final = 65535

Response = tuple[int | Dataset, Dataset | None]


class RetrieveAE(AE):
    """pynetdicom's AE, to which a C-MOVE handler hands the sub-association it opened."""

    def associate(self, addr: Any, port: int, *args: Any, opened: Any = None,
                  **kwargs: Any) -> Any:
        """As :meth:`pynetdicom.ae.ApplicationEntity.associate`, or ``opened`` when given."""
        if opened is not None:
            return opened
        return super().associate(addr, port, *args, **kwargs)

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        # pynetdicom 3.0 shuts a socket down before closing it when its connect
        # fails, and the shutdown raises first: keep it, to be closed for sure
        sock = super()._create_socket(assoc, address, tls_args)
        setattr(assoc, "gateway_socket", sock.socket)
        return sock


class _Unused:
    """Handed over when a C-MOVE fails before any sub-operation: never sent on."""

    is_established = True

    def release(self) -> None:
        """Nothing was opened."""


class _Refused(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass
class _Job:
    """One retrieve under way: what it sends, and how far it got."""

    service: str
    calling_ae: str
    root: Root
    level: Level
    instances: Sequence[ToSend]
    destination: str
    started: float
    tally: Tally = field(default_factory=Tally)
    attempted: int = 0
    finished: bool = False


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


def _failed_list(uids: Sequence[str]) -> Dataset:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = list(uids)
    return ds


def parse_retrieve(ds: Dataset, root: Root, scope: Scope) -> Query:
    """The index query of a C-MOVE or C-GET identifier (see the module notes).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The request identifier.
    root : gateway.query.Root
        The information model of the request's SOP Class.
    scope : storage.search.Scope
        What the caller may retrieve.

    Returns
    -------
    storage.search.Query
        The level and its unique keys, and those above.

    Raises
    ------
    IdentifierError
        0xA900, naming the key and the rule (PS3.4 C.4.2.2.1).
    """
    query = parse_identifier(ds, root, scope).query
    level = query.level
    above = [lvl for lvl in Level if lvl.depth < level.depth
             and not (root is Root.STUDY and lvl is Level.PATIENT)]
    names = [KEYWORDS[UNIQUE[lvl]] for lvl in [*above, level]]
    keys = {name: query.keys[name] for name in names}
    if not isinstance(keys[KEYWORDS[UNIQUE[level]]], Single | UidList):
        raise IdentifierError(f"{UNIQUE[level]}: a value is required to retrieve at the "
                              f"{level.value} level")
    return Query(level=level, keys=keys, scope=scope)


def _caller(event: Any) -> tuple[str, Decision | None]:
    assoc = event.assoc
    return str(assoc.requestor.ae_title).strip(), getattr(assoc, "gateway_decision", None)


def _job(event: Any, app: App, service: str, decision: Decision, calling_ae: str,
         destination: str, started: float) -> _Job:
    """Parse the identifier and read what it names (raises :class:`_Refused`)."""
    root = _ROOTS[str(event.request.AffectedSOPClassUID)]
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - pynetdicom raises whatever the decoder raised
        raise _Refused(UNABLE_TO_DECODE[service], "the identifier cannot be decoded") from None
    try:
        query = parse_retrieve(identifier, root, Scope(decision.scope, decision.peer_slug))
    except IdentifierError as exc:
        raise _Refused(exc.status, exc.comment) from None
    try:
        instances = instances_to_send(app.engine, query, limit=MAX_SUBOPERATIONS + 1)
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("%s calling_ae=%r reason=%r", service, calling_ae, exc.__class__.__name__)
        raise _Refused(UNABLE_TO_CALCULATE, "the index cannot be read") from None
    if len(instances) > MAX_SUBOPERATIONS:
        raise _Refused(UNABLE_TO_CALCULATE,
                       f"more than {MAX_SUBOPERATIONS} instances; retrieve fewer")
    return _Job(service, calling_ae, root, query.level, instances, destination, started)


def _outcome(job: _Job, cancelled: bool, lost: bool) -> int:
    """The final status pynetdicom sends, from the node's own counts."""
    if cancelled:
        return CANCEL
    failed = job.attempted - job.tally.completed - job.tally.warning
    if lost or (job.instances and failed == len(job.instances)):
        return UNABLE_TO_PERFORM
    return SUCCESS if not failed and not job.tally.warning else WARNING


def _finish(app: App, job: _Job, status: int, reason: str = "") -> None:
    """Log and audit a retrieve once, with its counts (no identifier)."""
    if job.finished:
        return
    job.finished = True
    tally = job.tally
    failed = job.attempted - tally.completed - tally.warning
    detail = (f"root={job.root.name.lower()} level={job.level.value} "
              f"destination={job.destination or '-'} instances={len(job.instances)} "
              f"completed={tally.completed} warning={tally.warning} failed={failed} "
              f"status=0x{status:04X}" + (f" reason={reason}" if reason else ""))
    logger.info("%s calling_ae=%r %s elapsed=%.3fs", job.service, job.calling_ae, detail,
                time.monotonic() - job.started)
    studies = {item.study_instance_uid for item in job.instances}
    try:
        with session_scope(app.engine) as session:
            audit.record(session, job.service, job.calling_ae,
                         "success" if status == SUCCESS else "failure",
                         study_instance_uid=studies.pop() if len(studies) == 1 else None,
                         detail=detail)
    except (SQLAlchemyError, StorageError) as exc:
        logger.error("%s audit failed reason=%r", job.service, exc.__class__.__name__)


def _send(event: Any, app: App, job: _Job, accepted: dict[str, set[str]],
          sub: Any = None) -> Iterator[Response]:
    """One pending yield per instance; the final status is pynetdicom's."""
    try:
        for item in job.instances:
            if event.is_cancelled:
                _finish(app, job, CANCEL)
                yield CANCEL, None
                return
            if sub is not None and _ended(sub):
                comment = "the move destination ended the association"
                _finish(app, job, UNABLE_TO_PERFORM, comment)
                yield _status(UNABLE_TO_PERFORM, comment), None
                return
            yield PENDING, load(app.store, item, accepted)
            job.attempted += 1
        _finish(app, job, _outcome(job, cancelled=False, lost=False))
    except GeneratorExit:
        _finish(app, job, _outcome(job, cancelled=False, lost=True),
                "the retrieve association ended")
        raise


def _ended(sub: Any) -> bool:
    """Whether the move destination's association is over, or about to be.

    A destination that aborts (PS3.8 7.3) fails the C-STORE in progress at
    once, but the sub-association stays "established" until its reactor
    takes the A-ABORT (or the A-P-ABORT of a dropped connection) from the
    DUL's queue; pynetdicom would send the next C-STORE into it meanwhile
    and wait a whole DIMSE timeout for an answer that cannot come. The
    indication still queued counts (``acse.is_aborted`` peeks at it), and so
    does a DUL that has stopped.
    """
    if not sub.is_established:
        return True
    acse, dul = getattr(sub, "acse", None), getattr(sub, "dul", None)
    return bool((acse is not None and acse.is_aborted())
                or (dul is not None and not dul.is_alive()))


def _refuse(service: str, calling_ae: str, refused: _Refused) -> None:
    logger.warning("%s calling_ae=%r status=0x%04X reason=%r", service, calling_ae,
                   refused.status, refused.comment)


def _refuse_move(status: int, comment: str, failed: Sequence[str] = (),
                 count: int = 1) -> Iterator[Any]:
    """A C-MOVE failure before any sub-operation (see the module notes)."""
    yield "", 0, {"opened": _Unused()}
    yield count
    yield _status(status, comment), _failed_list(failed)


def handle_move(event: Any, app: App) -> Iterator[Any]:
    """EVT_C_MOVE: send what the identifier names to the Move Destination (module notes)."""
    started = time.monotonic()
    calling_ae, decision = _caller(event)
    if decision is None or not may_retrieve(decision):
        record_refusal(app, "move-refused", calling_ae, "peer has no retrieve role")
        yield from _refuse_move(NOT_AUTHORISED, "calling AE may not retrieve")
        return
    wanted = str(event.move_destination or "").strip()
    destination, allowed = move_destination(app, decision, wanted)
    if destination is None:
        record_refusal(app, "move-refused", calling_ae, "move destination unknown")
        yield None, None  # pynetdicom answers 0xA801, move destination unknown
        return
    if not allowed:
        record_refusal(app, "move-refused", calling_ae,
                       f"destination {destination.slug} not allowed for this caller")
        yield from _refuse_move(DESTINATION_NOT_ALLOWED, "Move Destination not allowed")
        return
    try:
        job = _job(event, app, "move", decision, calling_ae, destination.slug, started)
    except _Refused as refused:
        _refuse("move", calling_ae, refused)
        yield from _refuse_move(refused.status, refused.comment)
        return
    if not job.instances:
        _finish(app, job, SUCCESS)
        yield destination.host, destination.port
        yield 0
        return
    sub = open_destination(event.assoc.ae, destination, contexts_for(job.instances), job.tally,
                           app.settings.limits.max_pdu, tls_args(app.settings.tls, destination))
    if not sub.is_established:
        comment = "the move destination cannot be reached"
        job.attempted = len(job.instances)
        _finish(app, job, UNABLE_TO_PERFORM, comment)
        yield from _refuse_move(UNABLE_TO_PERFORM, comment,
                                [item.sop_instance_uid for item in job.instances],
                                len(job.instances))
        return
    yield destination.host, destination.port, {"opened": sub}
    yield len(job.instances)
    yield from _send(event, app, job, accepted_syntaxes(sub.accepted_contexts), sub)


def handle_get(event: Any, app: App) -> Iterator[Any]:
    """EVT_C_GET: send what the identifier names back on this association (module notes)."""
    started = time.monotonic()
    calling_ae, decision = _caller(event)
    if decision is None or not may_retrieve(decision):
        record_refusal(app, "get-refused", calling_ae, "peer has no retrieve role")
        yield 1
        yield _status(NOT_AUTHORISED, "calling AE may not retrieve"), None
        return
    try:
        job = _job(event, app, "get", decision, calling_ae, "", started)
    except _Refused as refused:
        _refuse("get", calling_ae, refused)
        yield 1
        yield _status(refused.status, refused.comment), None
        return
    if not job.instances:
        _finish(app, job, SUCCESS)
        yield 0
        return
    yield len(job.instances)
    assoc = event.assoc
    counting = job.tally.on_message
    assoc.bind(evt.EVT_DIMSE_RECV, counting)
    try:
        yield from _send(event, app, job, accepted_syntaxes(assoc.accepted_contexts))
    finally:
        assoc.unbind(evt.EVT_DIMSE_RECV, counting)
