"""A private certificate authority and a loopback server certificate, written as PEM.

:func:`write_pki` makes a CA (ECDSA P-256, self-signed, ten years) and a server certificate
it signs for the given names (``127.0.0.1`` and ``localhost`` by default, as IP and DNS
subject alternative names) with ``serverAuth`` extended key usage. Clients trust the CA file;
the server presents the certificate and key. Private keys are written ``0600``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names a loopback server certificate covers by default.
LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class PkiFiles:
    """Where :func:`write_pki` put the CA certificate and the server certificate and key."""

    ca: Path
    """The CA certificate (clients pass it as ``tls_ca``)."""
    ca_key: Path
    """The CA's private key (kept to sign more certificates; ``0600``)."""
    server_cert: Path
    """The server certificate (PEM)."""
    server_key: Path
    """The server's private key (PEM, ``0600``)."""


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(path, data)


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (``0600``) from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def write_pki(
    directory: str | os.PathLike[str],
    *,
    names: Sequence[str] = LOOPBACK_NAMES,
    organization: str = "foundation",
    days: int = 3650,
) -> PkiFiles:
    """Write ``ca.pem``, ``ca-key.pem``, ``server-cert.pem`` and ``server-key.pem``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = PkiFiles(
        ca=root / "ca.pem",
        ca_key=root / "ca-key.pem",
        server_cert=root / "server-cert.pem",
        server_key=root / "server-key.pem",
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.ca_key, ca_key)
    files.server_cert.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, srv_key)
    return files


__all__ = ["LOOPBACK_NAMES", "PkiFiles", "write_pki", "write_secret"]
