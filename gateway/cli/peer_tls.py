"""``dicom-gateway peer tls``: a peer's DICOM TLS, both ways (PS3.15 B.9; RELIABILITY.md T02).

``--connect`` makes the associations the node opens to the peer (forwarding,
C-MOVE sub-operations, ``peer echo``) use TLS, verifying the peer's server
certificate against ``tls.ca_certificates`` and its host name or address;
``--no-connect`` goes back to plain TCP. ``--certificate FILE`` (PEM or DER)
or ``--certificate-sha256 HEX`` pins the client certificate the peer must
present: an association claiming its AE title is then refused (1,1,3)
unless it comes over the TLS listener with exactly that certificate;
``--no-certificate`` removes the pin. Changes are audited; an unknown slug
exits 3, a bad value exits 2 naming the option.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import click

import storage.audit as audit
import storage.peers as peers
from gateway.cli._context import AppContext, pass_app
from gateway.cli._exit import translate_errors
from gateway.cli._node import node_app, storage_failure
from gateway.cli.peer import _actor, _as_usage, peer
from gateway.errors import NotFoundError, UsageError
from gateway.tls import fingerprint
from storage.db import session_scope
from storage.errors import StorageError

__all__ = ["tls"]


def _read_certificate(path: Path) -> str:
    """The SHA-256 fingerprint of the certificate in ``path`` (PEM or DER)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--certificate: cannot read {path} ({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            data = ssl.PEM_cert_to_DER_cert(data.decode("ascii", "replace"))
        except ValueError:
            raise UsageError(f"--certificate: {path} is not a PEM certificate") from None
    elif not data.startswith(b"\x30"):  # a DER certificate is an ASN.1 SEQUENCE
        raise UsageError(f"--certificate: expected a PEM or DER certificate file, got {path}")
    return fingerprint(data)


@peer.command()
@click.argument("slug")
@click.option("--connect/--no-connect", default=None,
              help="Open associations to this peer over TLS (or plain TCP).")
@click.option("--certificate", "certificate_file", type=click.Path(path_type=Path),
              default=None, help="Pin the client certificate this peer must present (PEM/DER).")
@click.option("--certificate-sha256", default=None, metavar="HEX",
              help="Pin it by its SHA-256 fingerprint (64 hex digits, colons allowed).")
@click.option("--no-certificate", is_flag=True, help="Remove the pinned certificate.")
@pass_app
@translate_errors
def tls(app: AppContext, slug: str, connect: bool | None, certificate_file: Path | None,
        certificate_sha256: str | None, no_certificate: bool) -> None:
    """Set how SLUG uses DICOM TLS; without options, show it."""
    pins = [certificate_file is not None, certificate_sha256 is not None, no_certificate]
    if sum(pins) > 1:
        raise UsageError("--certificate, --certificate-sha256 and --no-certificate: give one")
    changes: peers.PeerChanges = {}
    if connect is not None:
        changes["tls"] = connect
    if certificate_file is not None:
        changes["certificate_sha256"] = _read_certificate(certificate_file)
    elif certificate_sha256 is not None:
        changes["certificate_sha256"] = certificate_sha256
    elif no_certificate:
        changes["certificate_sha256"] = None
    node = node_app(app)
    try:
        with session_scope(node.engine) as session:
            try:
                record = (peers.update(session, slug, **changes) if changes
                          else peers.get(session, slug))
            except StorageError as exc:
                raise _as_usage(exc) from exc
            if record is not None and changes:
                audit.record(session, "peer-update", _actor(), "success",
                             detail=f"peer {slug}: {', '.join(sorted(changes))}")
    except StorageError as exc:
        raise storage_failure(exc) from exc
    if record is None:
        raise NotFoundError(f"peer {slug!r} not found; see: dicom-gateway peer list")
    pin = record.certificate_sha256 or "none"
    click.echo(f"peer {record.slug}: connect over TLS {'yes' if record.tls else 'no'}, "
               f"client certificate pinned {pin}")
