"""The Application Entity: presentation contexts, limits and the association policy.

Services (PS3.4): Verification SCP (A), Storage SCP (B) for every storage SOP
class pynetdicom knows, each with the transfer syntaxes below, accepted as
received: compressed pixel data is never decoded here. Query/Retrieve FIND
SCP (C.4.1) for the Patient Root and Study Root information models, over the
uncompressed syntaxes (:mod:`gateway.find`), with SOP Class Extended
Negotiation answered for combined date-time matching only; MOVE (C.4.2) and
GET (C.4.3) SCP for both models (:mod:`gateway.retrieve`). The storage
contexts accept SCP/SCU role selection (PS3.4 C.4.3, PS3.7 D.3.3.4): a
C-GET caller takes the Storage SCP role and the node sends on its
association; a caller that proposes no roles keeps the default ones.
Storage Commitment Push Model (J.3) only to receive results
(:mod:`gateway.commitment`): a destination that reports on an association
of its own proposes the SCP role for itself, which is accepted; a caller
that proposes the SCU role is rejected, and an N-ACTION is refused (the node
commits nothing for others). Deflated Explicit VR Little Endian is not
offered (RELIABILITY T18: a small
deflated stream can inflate to gigabytes). A SOP class outside this list
gets its presentation context rejected with reason 3, abstract syntax not
supported (T19).

Limits come from ``[limits]``: maximum associations (then A-ASSOCIATE-RJ
transient, local limit exceeded), ACSE/DIMSE/network timeouts, maximum PDU.
Every association accepted or rejected is audited: our policy's
rejections when they are decided, pynetdicom's own (the limit, a bad
application context) and every acceptance once the A-ASSOCIATE-AC or -RJ
has gone out (:mod:`gateway.audittrail`). A request aborted for a malformed
UID in its command is audited too (:mod:`gateway.commandcheck`).
Every accepted socket gets TCP_NODELAY (without it, small DIMSE responses
wait on Nagle's algorithm). The contexts are built once and shared by every
association (:mod:`gateway.contexts`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, cast

from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.transport import ThreadedAssociationServer

from .app import App
from .audittrail import record_quietly
from .commandcheck import audit_malformed_command
from .commitment import ACCEPTOR_ROLES, PUSH_MODEL, handle_event_report, refuse_action
from .contexts import SharedContexts
from .find import handle_find, handle_sop_extended
from .handlers import handle_echo, handle_store
from .partial import cap_receive, discard_partial_receive
from .pduguard import install as install_pdu_guard
from .policy import admit, record_admission, record_refusal, record_rejection
from .retrieve import GET_SOP_CLASSES, MOVE_SOP_CLASSES, RetrieveAE, handle_get, handle_move
from .reuseport import (
    ListenerServer,
    ListenerTLSServer,
    ReusePortServer,
    ReusePortTLSServer,
    connection_cap,
)
from .tls import client_fingerprint, start_tls_server
from .unrequested import end_unrequested

__all__ = [
    "FIND_TRANSFER_SYNTAXES", "TRANSFER_SYNTAXES", "build_ae", "open_listeners", "set_tcp_nodelay",
    "start_listener",
]

logger = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
#: Patient Root and Study Root Query/Retrieve Information Model - FIND
FIND_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelFind,
                    StudyRootQueryRetrieveInformationModelFind)
#: what C-FIND identifiers may use: the uncompressed syntaxes, never deflated (T18)
FIND_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]

#: what the Storage SCP accepts, as received (PS3.5 Annex A)
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


def build_ae(app: App, *, receivers: int = 1) -> RetrieveAE:
    """The AE with its contexts and limits (no listener yet).

    ``receivers``: how many processes receive on the listener's port; each takes
    its share of ``limits.max_associations`` (rounded up).
    """
    settings = app.settings
    ae = RetrieveAE(ae_title=settings.node.ae_title)
    limits = settings.limits
    ae.maximum_associations = -(-limits.max_associations // max(1, receivers))
    ae.acse_timeout = limits.acse_timeout
    ae.dimse_timeout = limits.dimse_timeout
    ae.network_timeout = limits.network_timeout
    ae.connection_timeout = limits.acse_timeout  # a C-MOVE's connection to its destination
    ae.maximum_pdu_size = limits.max_pdu
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES,
                                     scu_role=True, scp_role=True)
    for sop_class in (*FIND_SOP_CLASSES, *MOVE_SOP_CLASSES, *GET_SOP_CLASSES):
        ae.add_supported_context(sop_class, FIND_TRANSFER_SYNTAXES)
    scu_role, scp_role = ACCEPTOR_ROLES
    ae.add_supported_context(PUSH_MODEL, FIND_TRANSFER_SYNTAXES, scu_role=scu_role,
                             scp_role=scp_role)
    return ae


def set_tcp_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: turn Nagle's algorithm off on the association's socket, and bound reads.

    An accepted socket is blocking (Python's ``accept`` drops the listener's
    timeout), and pynetdicom reads a PDU to its end once its first bytes are
    in: a peer that stops mid-PDU held the connection's two threads until it
    chose to close (RELIABILITY T04, T05, T08). With ``network_timeout`` on
    the socket such a read ends, and the association with it.
    """
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.socket.settimeout(event.assoc.network_timeout)


def _guard_pdus(event: Any, app: App) -> None:
    """EVT_CONN_OPEN: check each PDU's header, and a request pynetdicom would choke on
    (:mod:`gateway.pduguard`); what that rejects is audited like any rejection."""
    address = str(event.address[0])

    def rejected(calling_ae: str, reason: str) -> None:
        record_rejection(app, calling_ae, address, "1,2,1")

    install_pdu_guard(event, rejected)


def _on_requested(event: Any, app: App) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip()
    called = str(primitive.called_ae_title).strip()
    address = str(assoc.requestor.address)
    decision = admit(app, calling, called, address, client_fingerprint(assoc))
    refusal = _malformed(primitive)
    if refusal is None and not decision.admitted and decision.reject is not None:
        refusal = decision.reject, decision.reason
    if refusal is not None:
        reject, reason = refusal
        result, source, diagnostic = reject
        record_refusal(app, "association-rejected", calling,
                       f"{reason} address={address} rj={result},{source},{diagnostic}")
        # as pynetdicom's own acceptor does: queue the A-ASSOCIATE-RJ, then stop the
        # DUL once it has sent it, so the socket is not closed before the peer reads it
        assoc.acse.send_reject(*reject)
        assoc.kill()
        return
    assoc.gateway_decision = decision


def _on_accepted(event: Any, app: App) -> None:
    """EVT_ACCEPTED: the A-ASSOCIATE-AC went out; audit the admission."""
    assoc = event.assoc
    decision = getattr(assoc, "gateway_decision", None)
    if decision is not None:
        record_admission(app, str(assoc.requestor.ae_title).strip(),
                         str(assoc.requestor.address), decision)


def _on_rejected(event: Any, app: App) -> None:
    """EVT_REJECTED: pynetdicom's own rejections (too many associations, a bad
    application context or protocol version), after our policy admitted the caller."""
    assoc = event.assoc
    primitive = assoc.acceptor.primitive
    rj = f"{primitive.result},{primitive.result_source},{primitive.diagnostic}"
    record_rejection(app, str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address),
                     rj)


def _malformed(primitive: Any) -> tuple[tuple[int, int, int], str] | None:
    """An A-ASSOCIATE-RQ pynetdicom accepts although PS3.8 does not (RELIABILITY T03).

    A non-DICOM application context name (PS3.7 A.2.1, PS3.8 7.1.1.2): RJ
    permanent, service user, application-context-name-not-supported (1, 1, 2).
    No presentation context (PS3.8 9.3.2 requires one or more): RJ permanent,
    ACSE, no reason given (1, 2, 1).
    """
    if str(primitive.application_context_name) != APPLICATION_CONTEXT_NAME:
        return (1, 1, 2), "application context not supported"
    if not primitive.presentation_context_definition_list:
        return (1, 2, 1), "no presentation context proposed"
    return None


def start_listener(app: App, ae: RetrieveAE | None = None, *,
                   tls: ssl.SSLContext | None = None,
                   shared: bool = False) -> ThreadedAssociationServer:
    """Start serving on ``listener.bind``:``listener.port`` (port 0 picks a free one).

    With ``tls`` (:func:`gateway.tls.server_context`) the listener is the DICOM
    TLS one, on ``tls.port``, its handshakes done in each association's thread.
    With ``shared`` the port is bound with ``SO_REUSEPORT``, beside the node's
    other receiving processes (:mod:`gateway.reuseport`, :mod:`gateway.receivers`).
    """
    ae = ae or build_ae(app)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, set_tcp_nodelay),
        (evt.EVT_CONN_OPEN, _guard_pdus, [app]),
        (evt.EVT_CONN_CLOSE, discard_partial_receive),
        (evt.EVT_CONN_CLOSE, end_unrequested),
        (evt.EVT_PDU_RECV, cap_receive, [app]),
        (evt.EVT_DIMSE_RECV, audit_malformed_command, [app]),
        (evt.EVT_REQUESTED, _on_requested, [app]),
        (evt.EVT_ACCEPTED, _on_accepted, [app]),
        (evt.EVT_REJECTED, _on_rejected, [app]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [app]),
        (evt.EVT_C_FIND, handle_find, [app]),
        (evt.EVT_C_MOVE, handle_move, [app]),
        (evt.EVT_C_GET, handle_get, [app]),
        (evt.EVT_SOP_EXTENDED, handle_sop_extended),
        (evt.EVT_N_EVENT_REPORT, handle_event_report, [app]),
        (evt.EVT_N_ACTION, refuse_action, [app]),
    ]
    settings = app.settings
    contexts = SharedContexts(ae.supported_contexts)
    server: ThreadedAssociationServer | None
    if tls is None:
        address = (settings.listener.bind, settings.listener.port)
        server = _serve(ae, address, handlers, contexts,
                        ReusePortServer if shared else ListenerServer)
    else:
        address = (settings.listener.bind, settings.tls.port)

        def audit_refusal(peer: str, reason: str) -> None:  # RELIABILITY.md T02, T09
            record_quietly(app, "tls-handshake-refused", "-", "failure", queued=True,
                           detail=f"address={peer} reason={reason}")

        server = start_tls_server(ae, address, handlers, contexts, tls,
                                  settings.tls.handshake_timeout, audit_refusal,
                                  ReusePortTLSServer if shared else ListenerTLSServer)
    if server is None:  # only a blocking server returns None
        raise RuntimeError("the listener did not start")
    server.connection_cap = connection_cap(ae.maximum_associations)  # type: ignore[attr-defined]
    host, port = server.server_address[:2]
    logger.info("listening ae_title=%s address=%s:%s%s", settings.node.ae_title, host, port,
                " tls=bcp195" if tls is not None else "")
    return server


def open_listeners(app: App, ae: RetrieveAE, context: ssl.SSLContext | None, *,
                   shared: bool = False,
                   ) -> tuple[ThreadedAssociationServer | None, ThreadedAssociationServer | None]:
    """The node's listeners, plain and TLS: the TLS one when ``context`` is given, the
    plain one unless TLS is on without ``tls.plain_listener``. TLS starts first."""
    tls = start_listener(app, ae, tls=context, shared=shared) if context else None
    plain = None
    if context is None or app.settings.tls.plain_listener:
        plain = start_listener(app, ae, shared=shared)
    return plain, tls


def _serve(ae: RetrieveAE, address: tuple[str, int], handlers: list[Any], contexts: Any,
           server_class: type[ThreadedAssociationServer]) -> ThreadedAssociationServer:
    """What ``AE.start_server(block=False)`` does, with our ``server_class``
    (:mod:`gateway.reuseport`: the listen backlog, a shared port)."""
    server = cast(ThreadedAssociationServer, ae.make_server(
        address, contexts=contexts, evt_handlers=handlers, server_class=server_class))
    threading.Thread(target=server.serve_forever, name="AcceptorServer",
                     daemon=True).start()
    ae._servers.append(server)  # as start_server does: shutdown() removes it again
    return server
