"""Test certificates for DICOM TLS: a CA, a server certificate for 127.0.0.1, client ones.

Made with ``cryptography`` (already a dependency) into a folder, as PEM files
that pynetdicom, DCMTK and the node all read. ``other_ca`` signs a client
certificate the node must not trust.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class PKI:
    ca: Path  # the trusted authority's certificate
    server: Identity  # for 127.0.0.1 and localhost
    client: Identity  # signed by the trusted authority
    stranger: Identity  # a client signed by another authority
    expired: Identity  # a server certificate for 127.0.0.1 that expired yesterday


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicom-gateway tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _authority(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256()))
    return certificate, key


def _issue(folder: Path, stem: str, common_name: str,
           issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
           server: bool, expired: bool = False) -> Identity:
    key = _key()
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3 if expired else 0)
    builder = (
        x509.CertificateBuilder().subject_name(_name(common_name))
        .issuer_name(issuer[0].subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(  # a node is a server and, to others, a client
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    certificate = builder.sign(issuer[1], hashes.SHA256())
    identity = Identity(folder / f"{stem}.crt", folder / f"{stem}.key")
    identity.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    identity.private_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    identity.private_key.chmod(0o600)
    return identity


def make_pki(folder: Path) -> PKI:
    """Write the test PKI into ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = _authority("dicom-gateway test CA")
    other = _authority("someone else's CA")
    ca = folder / "ca.crt"
    ca.write_bytes(authority[0].public_bytes(serialization.Encoding.PEM))
    return PKI(
        ca=ca,
        server=_issue(folder, "server", "GATEWAY", authority, server=True),
        client=_issue(folder, "client", "CLINIC", authority, server=False),
        stranger=_issue(folder, "stranger", "STRANGER", other, server=False),
        expired=_issue(folder, "expired", "INSTITUTE", authority, server=True, expired=True),
    )
