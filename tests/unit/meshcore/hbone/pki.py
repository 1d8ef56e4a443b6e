"""Test PKI for HBONE: an ECDSA P-256 root and SPIFFE leaves, TLS 1.3 contexts with ALPN h2.

A stand-in for meshcore.identity (written in parallel) so HBONE is tested against real mTLS now.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TlsStream = trio.SSLStream[trio.abc.Stream]


class IdentityRejected(Exception):
    pass


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Pki:
    """One trust root; :meth:`leaf` issues a certificate for a SPIFFE ID."""

    def __init__(self, directory: Path | None = None, trust_domain: str = "cluster.local") -> None:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="hbone-pki-"))
            weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        self.directory = directory
        self.trust_domain = trust_domain
        now = datetime.datetime.now(datetime.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=2))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.root_key, hashes.SHA256())
        )
        self.root_path = self.directory / "root.pem"
        self.root_path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))

    def spiffe(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"

    def leaf(self, spiffe_id: str) -> tuple[Path, Path]:
        """Write a leaf certificate and key for ``spiffe_id``; returns (cert path, key path)."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=2))
            .not_valid_after(now + datetime.timedelta(hours=24))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        stem = spiffe_id.rsplit("/", 1)[-1] + f"-{cert.serial_number % 10**8}"
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return cert_path, key_path

    def _context(self, purpose: ssl.Purpose, spiffe_id: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(
            ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.root_path))
        ctx.set_alpn_protocols(["h2"])
        if spiffe_id is not None:
            cert, key = self.leaf(spiffe_id)
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def server_context(self, spiffe_id: str) -> ssl.SSLContext:
        return self._context(ssl.Purpose.CLIENT_AUTH, spiffe_id)

    def client_context(self, spiffe_id: str | None) -> ssl.SSLContext:
        """``None`` makes a client without a certificate (which the server must refuse)."""
        return self._context(ssl.Purpose.SERVER_AUTH, spiffe_id)


def peer_spiffe_id(ssl_stream: trio.SSLStream[trio.abc.Stream]) -> str:
    der = ssl_stream.getpeercert(binary_form=True)
    if not der:
        raise IdentityRejected("peer presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise IdentityRejected(f"peer certificate has no single SPIFFE URI SAN: {uris}")
    return str(uris[0])


def verify_any_in_domain(trust_domain: str = "cluster.local") -> Callable[[TlsStream], str]:
    """Server-side check: any identity of the trust domain (authorization decides the rest)."""

    def verify(ssl_stream: trio.SSLStream[trio.abc.Stream]) -> str:
        identity = peer_spiffe_id(ssl_stream)
        if not identity.startswith(f"spiffe://{trust_domain}/"):
            raise IdentityRejected(f"{identity} is outside trust domain {trust_domain}")
        return identity

    return verify


def verify_one_of(expected: tuple[str, ...]) -> Callable[[TlsStream], Awaitable[str]]:
    """Client-side check: the server must be one of the expected identities."""

    async def verify(ssl_stream: trio.SSLStream[trio.abc.Stream]) -> str:
        await trio.lowlevel.checkpoint()
        identity = peer_spiffe_id(ssl_stream)
        if identity not in expected:
            raise IdentityRejected(f"server identity {identity} is not one of {expected}")
        return identity

    return verify
