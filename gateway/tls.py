"""DICOM TLS: the BCP 195 profile for the listener and for associations the node opens.

PS3.15 Annex B.9 (BCP 195 TLS Secure Transport Connection Profile, which
replaces the retired AES and 3DES profiles): TLS 1.2 or newer, never SSL or
TLS 1.0/1.1, and for TLS 1.2 only the forward-secret AEAD cipher suites that
RFC 7525 (BCP 195) recommends (ECDHE or DHE key exchange, AES-GCM or
ChaCha20-Poly1305); TLS 1.3's own suites are all of that kind. The node's
identity is an X.509 certificate and its key (``[tls]`` of the configuration);
client certificates are asked for and, when presented, verified against
``tls.ca_certificates``; ``tls.require_client_certificate`` makes them
mandatory (PS3.15 B.9: entity authentication by certificates).

The listener (:func:`start_tls_server`) differs from pynetdicom's own TLS
server in one way, and for one reason: pynetdicom wraps each accepted socket
in the thread that accepts connections, where the handshake blocks, so one
client that connects and never speaks holds every other caller at the door.
:class:`TLSAssociationServer` accepts without handshaking and performs the
handshake in the association's own thread, bounded by
``tls.handshake_timeout``; a failed or silent handshake closes that one
connection with a log line naming the address and the TLS reason.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from config import ConfigError, TLSSettings
from storage.records import PeerRecord

__all__ = ["BCP195_CIPHERS", "TLSAssociationServer", "client_context", "client_fingerprint",
           "close_transport",
           "fingerprint", "server_context", "start_tls_server", "tls_args"]

logger = logging.getLogger(__name__)

#: TLS 1.2 suites of BCP 195 (RFC 7525 4.2), in OpenSSL's cipher-list syntax
BCP195_CIPHERS = "ECDHE+AESGCM:DHE+AESGCM:ECDHE+CHACHA20:DHE+CHACHA20:!aNULL:!eNULL"


def _base(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _load_identity(context: ssl.SSLContext, tls: TLSSettings) -> None:
    if tls.certificate is None or tls.private_key is None:
        return
    for key, path in (("tls.certificate", tls.certificate), ("tls.private_key", tls.private_key)):
        if not Path(path).is_file():
            raise ConfigError([f'{key}: expected a readable PEM file, got "{path}" '
                               "(no such file)"])
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f'tls.certificate: expected a PEM certificate whose key is '
                           f'tls.private_key, got "{tls.certificate}" ({_reason(exc)})']) from None


def _load_authorities(context: ssl.SSLContext, tls: TLSSettings, purpose: ssl.Purpose) -> None:
    if tls.ca_certificates is None:
        context.load_default_certs(purpose)
        return
    try:
        context.load_verify_locations(cafile=tls.ca_certificates)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f'tls.ca_certificates: expected a PEM file of certificates, got '
                           f'"{tls.ca_certificates}" ({_reason(exc)})']) from None


def server_context(tls: TLSSettings) -> ssl.SSLContext:
    """The listener's context; a bad file raises :class:`config.ConfigError` naming its key."""
    context = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(context, tls)
    _load_authorities(context, tls, ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else (
        ssl.CERT_OPTIONAL)
    return context


def client_context(tls: TLSSettings) -> ssl.SSLContext:
    """The context for associations the node opens: the server is verified, host name included.

    The node presents its own certificate when it has one (destinations
    that require client certificates).
    """
    context = _base(ssl.PROTOCOL_TLS_CLIENT)
    _load_identity(context, tls)
    _load_authorities(context, tls, ssl.Purpose.SERVER_AUTH)
    return context


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``peer.certificate_sha256`` holds it."""
    return hashlib.sha256(der).hexdigest()


def client_fingerprint(assoc: Any) -> str | None:
    """The fingerprint of the certificate a caller presented on the TLS listener, else None."""
    transport = getattr(assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return fingerprint(der) if der else None


@functools.cache
def _client_context_for(tls: TLSSettings) -> ssl.SSLContext:
    return client_context(tls)


def tls_args(tls: TLSSettings, peer: PeerRecord) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association to ``peer``: None unless ``peer.tls``.

    The server's certificate must name ``peer.host`` (PS3.15 B.9 leaves
    identity to the certificate; a DICOM peer is usually an IP address, which
    its certificate then carries as a subject alternative name).
    """
    return (_client_context_for(tls), peer.host) if peer.tls else None


def close_transport(assoc: Any) -> None:
    """Close the socket of an association that did not get established.

    pynetdicom 3.0 shuts a socket down before closing it, and when the peer
    has already closed the connection (a TLS port answering a plain
    client, a refused handshake) the shutdown raises and the close never
    happens: the socket stays open until the collector finds it.
    """
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        try:
            raw.close()
        except OSError:
            pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "handshake timed out"
    return type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:120]


class TLSAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the handshake moved into each association's thread.

    Written for pynetdicom 3.0 (:meth:`get_request` and
    :meth:`process_request_thread` of ``transport.AssociationServer`` and
    ``ThreadedAssociationServer``, and ``AE._servers``, which ``shutdown()``
    expects to hold the server); ``tests/unit/test_tls_contexts.py`` pins that version.
    """

    handshake_timeout: float = 10.0
    request_queue_size = 128  # listen backlog, as gateway.reuseport.BACKLOG
    #: called with (address, reason) for each refused handshake (the node audits it)
    on_refusal: Callable[[str, str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None and self.ssl_context is not None
        client, address = self.socket.accept()
        return self.ssl_context.wrap_socket(client, server_side=True,
                                            do_handshake_on_connect=False), address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        previous = request.gettimeout()
        try:
            request.settimeout(self.handshake_timeout)
            request.do_handshake()
            request.settimeout(previous)
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            address, reason = _address(client_address), _reason(exc)
            logger.warning("tls handshake refused address=%s reason=%r", address, reason)
            self.shutdown_request(request)
            if self.on_refusal is not None:
                self.on_refusal(address, reason)
            return
        super().process_request_thread(request, client_address)


def _address(client_address: Any) -> str:
    if isinstance(client_address, tuple | list) and client_address:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)


def start_tls_server(ae: AE, address: tuple[str, int], handlers: list[Any],
                     contexts: list[Any], context: ssl.SSLContext,
                     handshake_timeout: float,
                     on_refusal: Callable[[str, str], None] | None = None,
                     server_class: type[TLSAssociationServer] | None = None,
                     ) -> TLSAssociationServer:
    """Start a non-blocking :class:`TLSAssociationServer` (what ``AE.start_server`` does),
    or the subclass ``server_class``."""
    server = cast(TLSAssociationServer, ae.make_server(
        address, contexts=contexts, ssl_context=context, evt_handlers=handlers,
        server_class=server_class or TLSAssociationServer))
    server.handshake_timeout = handshake_timeout
    server.on_refusal = on_refusal
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer-TLS",
                              daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: shutdown() removes it again
    return server
