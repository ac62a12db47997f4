"""The DICOM TLS listener (PS3.15 B.9, BCP 195): who gets in, who does not, who waits for whom.

Transport tests: the node runs in this process on SQLite (nothing here
touches the index beyond start-up); pynetdicom is the client, with
:mod:`ssl` contexts made for each case. DCMTK over TLS is in
tests/interop/test_dcmtk_tls.py.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import storage.audit as audit
from config import ConfigError
from gateway.app import build_app
from gateway.node import Node
from gateway.tls import server_context
from storage.db import session_scope
from tests.conftest import TEST_KEY_HEX, node_settings, wait_until
from tests.interop.conftest import free_port
from tests.tlscerts import PKI, Identity, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_overrides(pki: PKI, **more: object) -> dict[str, object]:
    return {"tls.enabled": True, "tls.port": free_port(),
            "tls.certificate": str(pki.server.certificate),
            "tls.private_key": str(pki.server.private_key),
            "tls.ca_certificates": str(pki.ca), "tls.handshake_timeout": 3, **more}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    nodes: list[Node] = []

    def run(**overrides: object) -> Node:
        url = f"sqlite:///{(tmp_path / f'n{len(nodes)}' / 'db.sqlite3').as_posix()}"
        settings = node_settings(tmp_path / f"n{len(nodes)}", url, **overrides)
        node = Node(build_app(settings, {"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX}))
        node.start()
        nodes.append(node)
        return node

    yield run
    for node in nodes:
        node.stop()
        node.app.close()


def _client(pki: PKI, identity: Identity | None = None,
            maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if identity is not None:
        context.load_cert_chain(identity.certificate, identity.private_key)
    if maximum is not None:
        with warnings.catch_warnings():  # setting an old version is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _echo(port: int, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="CLINIC")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    tls_args = (context, "127.0.0.1") if context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY", tls_args=tls_args)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


def _admitted(port: int, context: ssl.SSLContext) -> bool:
    """Whether the listener keeps a TLS session with this client (raw socket: the refusal is
    the handshake's, and a refused pynetdicom client leaves its socket unclosed).

    With TLS 1.3 the server judges a client certificate after the client's side of
    the handshake is done, so a refusal shows as an alert on the first read; an
    admitted client instead meets silence (the node waits for its A-ASSOCIATE-RQ).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.settimeout(1.5)
                try:
                    return tls.recv(1) != b""
                except TimeoutError:
                    return True
        except (ssl.SSLError, ConnectionError):
            return False


def _plain_client_is_closed(port: int) -> bool:
    """A plain A-ASSOCIATE-RQ (PDU type 0x01) sent to the TLS port gets the connection closed."""
    request = bytes([0x01, 0x00]) + (68).to_bytes(4, "big") + bytes([0x00, 0x01, 0x00, 0x00])
    request += b"GATEWAY".ljust(16) + b"CLINIC".ljust(16) + bytes(32)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(request)
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            return True
        # a TLS alert record (type 21) or nothing, never an A-ASSOCIATE-AC/RJ (0x02/0x03)
        return answer == b"" or answer[:1] == b"\x15"


def test_echo_over_tls_with_and_without_a_client_certificate(start, pki: PKI) -> None:
    node = start(**_tls_overrides(pki))
    assert _echo(node.tls_port, _client(pki)), "TLS echo without a client certificate"
    assert _echo(node.tls_port, _client(pki, pki.client)), "TLS echo with a client certificate"
    assert _echo(node.port, None), "the plain listener runs beside the TLS one by default"


def test_tls_only_closes_the_plain_listener(start, pki: PKI) -> None:
    node = start(**_tls_overrides(pki, **{"tls.plain_listener": False}))
    assert node.server is None
    assert _echo(node.tls_port, _client(pki))


def test_required_client_certificate_refuses_none_and_strangers(start, pki: PKI,
                                                               caplog) -> None:
    node = start(**_tls_overrides(pki, **{"tls.require_client_certificate": True}))
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    assert _echo(node.tls_port, _client(pki, pki.client))
    assert _admitted(node.tls_port, _client(pki, pki.client))
    assert not _admitted(node.tls_port, _client(pki)), "no client certificate must be refused"
    assert not _admitted(node.tls_port, _client(pki, pki.stranger)), "unknown CA must be refused"

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "tls handshake refused" in r.getMessage()]

    wait_until(lambda: len(refusals()) >= 2, timeout=10, what="both refusals logged")
    assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in line for line in refusals()), refusals()
    assert all("address=127.0.0.1:" in line for line in refusals()), refusals()

    def audited() -> list[str]:
        with session_scope(node.app.engine, readonly=True) as session:
            return [e.detail for e in audit.list_events(session, event="tls-handshake-refused")]

    wait_until(lambda: len(audited()) >= 2, timeout=10, what="both refusals audited (T02)")
    assert all(detail.startswith("address=127.0.0.1:") for detail in audited()), audited()


def test_tls_1_1_and_a_plain_client_are_refused_cleanly(start, pki: PKI, caplog) -> None:
    node = start(**_tls_overrides(pki))
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    try:
        old = _client(pki, maximum=ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError:
        pytest.fail("this OpenSSL cannot even build a TLS 1.1 client context")
    assert not _admitted(node.tls_port, old), "TLS 1.1 must be refused (BCP 195)"
    assert _plain_client_is_closed(node.tls_port), "a plain DICOM client on the TLS port must fail"
    assert _echo(node.tls_port, _client(pki)), "the listener still serves after refusals"
    reasons = " ".join(r.getMessage() for r in caplog.records)
    assert "tls handshake refused" in reasons, reasons


def test_a_silent_client_stalls_nobody(start, pki: PKI) -> None:
    """A client that connects and never starts the handshake holds only its own connection."""
    node = start(**_tls_overrides(pki, **{"tls.handshake_timeout": 20}))
    silent = [socket.create_connection(("127.0.0.1", node.tls_port)) for _ in range(3)]
    try:
        time.sleep(0.3)  # let the listener accept them
        started = time.monotonic()
        assert _echo(node.tls_port, _client(pki)), "echo while silent clients hold connections"
        assert time.monotonic() - started < 15, "the echo waited for the silent clients"
    finally:
        for sock in silent:
            sock.close()


def test_a_silent_client_is_dropped_after_the_handshake_timeout(start, pki: PKI) -> None:
    node = start(**_tls_overrides(pki, **{"tls.handshake_timeout": 1}))
    with socket.create_connection(("127.0.0.1", node.tls_port)) as silent:
        silent.settimeout(10)
        started = time.monotonic()
        assert silent.recv(1) == b"", "the node should close a client that never handshakes"
        assert time.monotonic() - started < 8


def test_enabled_without_identity_or_with_a_bad_file_fails_naming_the_key(
        tmp_path: Path, pki: PKI) -> None:
    url = f"sqlite:///{(tmp_path / 'db.sqlite3').as_posix()}"
    with pytest.raises(ConfigError) as missing:
        node_settings(tmp_path, url, **{"tls.enabled": True})
    assert any(line.startswith("tls.certificate: expected a PEM file path")
               for line in missing.value.problems), missing.value.problems
    not_a_certificate = tmp_path / "not-a-certificate.pem"
    not_a_certificate.write_text("hello\n")
    settings = node_settings(tmp_path, url, **_tls_overrides(
        pki, **{"tls.certificate": str(not_a_certificate)}))
    with pytest.raises(ConfigError) as bad:
        server_context(settings.tls)
    assert bad.value.problems[0].startswith("tls.certificate: expected a PEM certificate"), (
        bad.value.problems)
    assert str(not_a_certificate) in bad.value.problems[0]
