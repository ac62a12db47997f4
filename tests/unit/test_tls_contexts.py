"""gateway.tls: the pynetdicom it was written for, and the BCP 195 settings of its contexts."""

from __future__ import annotations

import inspect
import ssl
from pathlib import Path

import pynetdicom
from pynetdicom import AE
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from config import TLSSettings
from gateway.tls import BCP195_CIPHERS, TLSAssociationServer, client_context, server_context
from tests.tlscerts import make_pki

CHECKED_PYNETDICOM = "3.0"


def test_written_for_this_pynetdicom() -> None:
    assert pynetdicom.__version__.startswith(CHECKED_PYNETDICOM + "."), (
        f"gateway.tls.TLSAssociationServer was written for pynetdicom {CHECKED_PYNETDICOM}, "
        f"this is {pynetdicom.__version__}: re-read AssociationServer.get_request, "
        "ThreadedAssociationServer.process_request_thread, AE.make_server and AE._servers")
    # what the override replaces: pynetdicom wraps (and so handshakes) in the accepting thread
    assert "wrap_socket" in inspect.getsource(AssociationServer.get_request)
    assert "server_class" in inspect.signature(AE.make_server).parameters
    assert isinstance(AE()._servers, list)
    assert issubclass(TLSAssociationServer, ThreadedAssociationServer)
    assert "process_request_thread" in ThreadedAssociationServer.__dict__


def _settings(folder: Path, require: bool = False) -> TLSSettings:
    pki = make_pki(folder)
    return TLSSettings(enabled=True, port=2762, certificate=pki.server.certificate,
                       private_key=pki.server.private_key, ca_certificates=pki.ca,
                       require_client_certificate=require, plain_listener=True,
                       handshake_timeout=10)


def test_contexts_follow_bcp_195(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for context in (server_context(settings), client_context(settings)):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        names = {cipher["name"] for cipher in context.get_ciphers()}
        tls12 = {cipher["name"] for cipher in context.get_ciphers()
                 if cipher["protocol"] == "TLSv1.2"}
        assert tls12, names
        assert all(("GCM" in name or "CHACHA20" in name) and ("ECDHE" in name or "DHE" in name)
                   for name in tls12), tls12
        assert not any("CBC" in name or "RC4" in name or "NULL" in name for name in names)
    assert "!aNULL" in BCP195_CIPHERS


def test_client_certificates_are_asked_for_or_required(tmp_path: Path) -> None:
    assert server_context(_settings(tmp_path / "a")).verify_mode is ssl.CERT_OPTIONAL
    assert server_context(_settings(tmp_path / "b", True)).verify_mode is ssl.CERT_REQUIRED
    client = client_context(_settings(tmp_path / "c"))
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
