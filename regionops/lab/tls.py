"""The lab's TLS: a lab CA and a server certificate for its S3/Route53 endpoint.

pgBackRest speaks only HTTPS to S3, so the lab serves moto over TLS.  ``lab up`` makes a
CA (kept for the lab's life) and a certificate for ``127.0.0.1`` signed by it; boto3
and pgBackRest trust the CA file the lab's topology names (``aws.ca_bundle``).

The certificate's SAN holds ``IP:127.0.0.1`` *and* ``DNS:127.0.0.1``: pgBackRest 2.45
checks the host name against the DNS entries only and ignores the IP one.  Nothing here
is secret beyond the lab (the keys never leave the lab directory, mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regionops.errors import ConfigurationError

HOST = "127.0.0.1"
DNS_NAMES = ("127.0.0.1", "localhost")
VALID_DAYS = 3650  # a lab lives for months; renewal would only add a failure mode


@dataclass(frozen=True)
class LabTls:
    """Where the lab's CA and server certificate live."""

    directory: Path
    # More addresses the server certificate must name (a WAN lab's regional S3 endpoints and backbone).
    addresses: tuple[str, ...] = ()

    @property
    def ca_file(self) -> Path:
        """The CA certificate every client trusts (``aws.ca_bundle``)."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def cert_file(self) -> Path:
        """The server certificate (S3/Route53 endpoint)."""
        return self.directory / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "server-key.pem"

    def ensure(self) -> bool:
        """Create the CA and the server certificate when missing (or not matching the CA); True if made."""
        self.directory.mkdir(parents=True, exist_ok=True)
        made = False
        if not (self.ca_file.exists() and self.ca_key.exists()):
            _write_ca(self)
            made = True
        if made or not (self.cert_file.exists() and self.key_file.exists()) or not self._cert_matches():
            _write_server_cert(self)
            made = True
        return made

    def _cert_matches(self) -> bool:
        """The server certificate was signed by this CA and names every host we serve."""
        try:
            ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound, OSError):
            return False
        names = set(san.get_values_for_type(x509.DNSName))
        return cert.issuer == ca.subject and {*DNS_NAMES, *self.addresses} <= names


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def _write_ca(tls: LabTls) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regionops lab CA")])
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(tls.ca_key, _key_pem(key))
    tls.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.ca_file.chmod(0o644)  # PostgreSQL's OS user (pgBackRest) reads it


def _write_server_cert(tls: LabTls) -> None:
    ca_key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # the lab makes EC keys; anything else is not its CA
        raise ConfigurationError(f"{tls.ca_key} is not an EC private key: remove the lab's tls directory to remake it")
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    # Each address as an IP and as a DNS name: pgBackRest matches the host it connects to against DNS names.
    ips = (HOST, *tls.addresses)
    san = x509.SubjectAlternativeName(
        [
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
            *(x509.DNSName(n) for n in dict.fromkeys((*DNS_NAMES, *tls.addresses))),
        ]
    )
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]), ca.subject, key.public_key())
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(tls.key_file, _key_pem(key))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def serves_tls(port: int, ca_file: Path, host: str = HOST, timeout: float = 3.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake with a certificate ``ca_file`` trusts."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False
