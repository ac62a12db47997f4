"""DCMTK's echoscu and storescu over DICOM TLS (PS3.15 B.9) to the node as a user starts it.

DCMTK's default profile is the Non-downgrading BCP 195 one (TLS 1.2+), the
node's too. ``+tls KEY CERT`` presents a client certificate, ``+tla`` none;
``+cf`` names the authority that signed the node's certificate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool, wait_until
from tests.corpus import make_clinic_study
from tests.interop.conftest import ServedNode, free_port, indexed_count
from tests.tlscerts import PKI, make_pki

# DCMTK over TLS, several seconds each: run in CI, not in every developer run
pytestmark = [pytest.mark.interop, pytest.mark.slow]

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _tls_node(serve: Callable[..., ServedNode], pki: PKI, require: bool) -> tuple[ServedNode, int]:
    port = free_port()
    node = serve(DICOM_GATEWAY_TLS__ENABLED="true", DICOM_GATEWAY_TLS__PORT=str(port),
                 DICOM_GATEWAY_TLS__CERTIFICATE=str(pki.server.certificate),
                 DICOM_GATEWAY_TLS__PRIVATE_KEY=str(pki.server.private_key),
                 DICOM_GATEWAY_TLS__CA_CERTIFICATES=str(pki.ca),
                 DICOM_GATEWAY_TLS__REQUIRE_CLIENT_CERTIFICATE="true" if require else "false",
                 # both listeners on ports shared by two receiving processes (gateway.receivers)
                 DICOM_GATEWAY_LISTENER__PROCESSES="2")
    return node, port


def _tls_args(pki: PKI, certificate: bool) -> list[str]:
    identity = (["+tls", str(pki.client.private_key), str(pki.client.certificate), "-pw"]
                if certificate else ["+tla"])
    return [*identity, "+cf", str(pki.ca)]


def _echo(port: int, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("echoscu", "dcmtk"), "-v", "-aet", "CLINIC",
                           "-aec", "GATEWAY", "-to", "10", *extra, "127.0.0.1", str(port)],
                          capture_output=True, text=True, env=DCMTK_ENV, check=False, timeout=60)


def test_echoscu_and_storescu_over_tls_with_and_without_a_client_certificate(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    node, tls_port = _tls_node(serve, pki, require=False)
    for certificate in (True, False):
        run = _echo(tls_port, _tls_args(pki, certificate))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Received Echo Response (Success)" in run.stdout + run.stderr
    study = make_clinic_study(tmp_path / "study", series=1, per_series=12, jpeg=False)
    run = subprocess.run(
        [require_tool("storescu", "dcmtk"), "-v", "-aet", "CLINIC", "-aec", "GATEWAY",
         *_tls_args(pki, True), "+sd", "127.0.0.1", str(tls_port), str(study.root)],
        capture_output=True, text=True, env=DCMTK_ENV, check=False, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert re.findall(r"Received Store Response \((\w+)\)", output) == ["Success"] * 12
    wait_until(lambda: indexed_count(node.database_url) == 12, timeout=120, what="12 indexed")


def test_a_plain_client_on_the_tls_port_and_a_missing_certificate_fail_cleanly(
    serve: Callable[..., ServedNode], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    node, tls_port = _tls_node(serve, pki, require=True)
    plain = _echo(tls_port, [])
    assert plain.returncode != 0, "a plain echoscu must not get through the TLS port"
    anonymous = _echo(tls_port, _tls_args(pki, False))
    assert anonymous.returncode != 0, "no client certificate, yet required: must be refused"
    accepted = _echo(tls_port, _tls_args(pki, True))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    plain_port = _echo(node.port, [])
    assert plain_port.returncode == 0, "the plain listener is unaffected"
    wait_until(lambda: node.log.read_text().count("tls handshake refused") >= 2, timeout=20,
               what="both refusals logged by the node")
    assert node.process.poll() is None


def test_forwarding_to_a_tls_destination(serve: Callable[..., ServedNode],
                                        cli: Callable[..., Any], tmp_path: Path) -> None:
    """DCMTK storescp +tls as the destination: the node connects with TLS and its certificate."""
    pki = make_pki(tmp_path / "pki")
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    sink = subprocess.Popen(
        [require_tool("storescp", "dcmtk"), "-aet", "SINK", "-od", str(folder),
         "+tls", str(pki.server.private_key), str(pki.server.certificate), "-pw",
         "+cf", str(pki.ca), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_until(lambda: _echo(port, ["-aec", "SINK", *_tls_args(pki, True)]).returncode == 0,
                   timeout=30, what="storescp answers a TLS C-ECHO")
        node, _ = _tls_node(serve, pki, require=False)

        def gw(*args: str) -> Any:
            return cli(*args, DICOM_GATEWAY_DATABASE__URL=node.database_url,
                       DICOM_GATEWAY_STORAGE__DATA_DIR=str(node.data_dir),
                       DICOM_GATEWAY_TLS__CERTIFICATE=str(pki.server.certificate),
                       DICOM_GATEWAY_TLS__PRIVATE_KEY=str(pki.server.private_key),
                       DICOM_GATEWAY_TLS__CA_CERTIFICATES=str(pki.ca))

        assert gw("peer", "add", "sink", "--ae-title", "SINK", "--host", "127.0.0.1",
                  "--port", str(port), "--role", "destination").exit_code == 0
        assert gw("peer", "tls", "sink", "--connect").exit_code == 0
        study = make_clinic_study(tmp_path / "study", series=1, per_series=6, jpeg=False)
        run = subprocess.run(
            [require_tool("storescu", "dcmtk"), "-aet", "CLINIC", "-aec", "GATEWAY", "+sd",
             "127.0.0.1", str(node.port), str(study.root)],
            capture_output=True, text=True, env=DCMTK_ENV, check=False, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        wait_until(lambda: indexed_count(node.database_url) == 6, timeout=120, what="6 indexed")
        uid = json.loads(gw("study", "list", "--json").stdout)[0]["study_instance_uid"]
        queued = gw("study", "forward", uid, "--to", "sink", "--now")
        assert queued.exit_code == 0, queued.output
        wait_until(lambda: len([p for p in folder.iterdir() if p.is_file()]) == 6, timeout=120,
                   what="6 instances received by storescp over TLS")
    finally:
        sink.terminate()
        sink.wait(20)
