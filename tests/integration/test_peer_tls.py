"""A peer's DICOM TLS: the client certificate it must present, and TLS to it (RELIABILITY T02).

The node runs in this process with its TLS listener; peers are registered
through ``dicom-gateway peer add`` and ``peer tls`` on the same database.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.cli import main
from gateway.cli._exit import NOT_FOUND, OK, USAGE
from gateway.node import Node
from gateway.tls import close_transport
from tests.conftest import TEST_KEY_HEX
from tests.interop.conftest import free_port
from tests.tlscerts import PKI, Identity, make_pki

Invoke = Callable[..., Result]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_env(pki: PKI) -> dict[str, str]:
    return {"DICOM_GATEWAY_TLS__CERTIFICATE": str(pki.server.certificate),
            "DICOM_GATEWAY_TLS__PRIVATE_KEY": str(pki.server.private_key),
            "DICOM_GATEWAY_TLS__CA_CERTIFICATES": str(pki.ca)}


@pytest.fixture
def tls_node(make_node: Callable[..., Node], pki: PKI) -> Node:
    return make_node(**{"tls.enabled": True, "tls.port": free_port(),
                        "tls.certificate": str(pki.server.certificate),
                        "tls.private_key": str(pki.server.private_key),
                        "tls.ca_certificates": str(pki.ca)})


def _gw(node: Node, pki: PKI) -> Invoke:
    def invoke(*args: str) -> Result:
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DICOM_GATEWAY_")}
        env.update({"DICOM_GATEWAY_HMAC_KEY": TEST_KEY_HEX,
                    "DICOM_GATEWAY_STORAGE__DATA_DIR": str(node.app.data_dir),
                    "DICOM_GATEWAY_DATABASE__URL": node.app.settings.database_url,
                    **_tls_env(pki)})
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def _sha256(identity: Identity) -> str:
    certificate = x509.load_pem_x509_certificate(identity.certificate.read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex()


def _associate(port: int, pki: PKI, identity: Identity | None,
               tls: bool = True) -> tuple[bool, bool]:
    """(established, rejected) for a CLINIC association over TLS with ``identity``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if identity is not None:
        context.load_cert_chain(identity.certificate, identity.private_key)
    ae = AE(ae_title="CLINIC")
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY",
                         tls_args=(context, "127.0.0.1") if tls else None)
    established, rejected = assoc.is_established, assoc.is_rejected
    if established:
        assoc.release()
    else:
        close_transport(assoc)
    return established, rejected


def test_a_pinned_peer_gets_in_only_with_its_certificate(tls_node: Node, pki: PKI) -> None:
    gw = _gw(tls_node, pki)
    assert gw("peer", "add", "clinic", "--ae-title", "CLINIC", "--host", "127.0.0.1",
              "--port", "104", "--role", "source").exit_code == OK
    pinned = gw("peer", "tls", "clinic", "--certificate", str(pki.client.certificate))
    assert pinned.exit_code == OK, pinned.output
    assert _sha256(pki.client) in pinned.stdout
    assert _associate(tls_node.tls_port, pki, pki.client) == (True, False)
    assert _associate(tls_node.tls_port, pki, None) == (False, True), "TLS without a certificate"
    assert _associate(tls_node.port, pki, None, tls=False) == (False, True), "plain listener"
    unpinned = gw("peer", "tls", "clinic", "--no-certificate")
    assert unpinned.exit_code == OK and "pinned none" in unpinned.stdout
    assert _associate(tls_node.port, pki, None, tls=False) == (True, False)


def test_peer_echo_over_tls_needs_connect(tls_node: Node, pki: PKI) -> None:
    gw = _gw(tls_node, pki)
    assert gw("peer", "add", "self", "--ae-title", "GATEWAY", "--host", "127.0.0.1",
              "--port", str(tls_node.tls_port), "--role", "destination").exit_code == OK
    plain = gw("peer", "echo", "self")
    assert plain.exit_code != OK, "a plain association to the TLS port must not succeed"
    assert gw("peer", "tls", "self", "--connect").exit_code == OK
    over_tls = gw("peer", "echo", "self")
    assert over_tls.exit_code == OK, over_tls.output
    assert "0x0000" in over_tls.stdout
    shown = gw("peer", "show", "self", "--json")
    assert '"tls": true' in shown.stdout


def test_peer_tls_refuses_bad_values(tls_node: Node, pki: PKI, tmp_path: Path) -> None:
    gw = _gw(tls_node, pki)
    assert gw("peer", "add", "clinic", "--ae-title", "CLINIC", "--host", "127.0.0.1",
              "--port", "104", "--role", "source").exit_code == OK
    not_a_certificate = tmp_path / "x.pem"
    not_a_certificate.write_text("hello")
    cases = [
        (["--certificate-sha256", "12:34"], "--certificate-sha256: expected a SHA-256"),
        (["--certificate", str(not_a_certificate)], "--certificate: expected a PEM or DER"),
        (["--certificate", str(tmp_path / "missing.pem")], "--certificate: cannot read"),
        (["--no-certificate", "--certificate-sha256", "ab" * 32], "give one"),
    ]
    for args, message in cases:
        result = gw("peer", "tls", "clinic", *args)
        assert result.exit_code == USAGE, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
    assert gw("peer", "tls", "nobody").exit_code == NOT_FOUND
