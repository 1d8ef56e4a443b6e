"""Reading mesh certificates: PEM bundles, the SPIFFE URI SAN, and a workload's credential set.

A :class:`WorkloadCertificate` is what the certificate manager hands to HBONE: the private key, the
chain to present (leaf first, then intermediates) and the trust bundle (every root currently trusted,
several during a root rotation). Certificates are kept parsed; PEM is produced only at the edges
(SSL contexts, config dumps).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshcore.identity.errors import InvalidCertificate, NotASpiffeCertificate
from meshcore.identity.spiffe import SCHEME, Identity


def load_pem_certificates(data: bytes | str, *, what: str = "certificate bundle") -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order; an empty or unreadable blob is an error."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise InvalidCertificate(
            f"{what} is not PEM certificates", reason=f"{what} could not be read: {exc}"
        ) from exc
    return certs


def load_pem_private_key(data: bytes | str) -> ec.EllipticCurvePrivateKey:
    """A workload key: only unencrypted ECDSA keys are mesh keys."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidCertificate("private key is not an unencrypted PEM key", reason=str(exc)) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidCertificate("private key is not ECDSA", reason="mesh keys are ECDSA P-256")
    return key


def certificates_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    """The ``spiffe://`` URI SANs of a certificate (none if it has no SAN extension)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(SCHEME)]


def identity_of(cert: x509.Certificate) -> Identity:
    """The one mesh identity a certificate speaks for; anything else is not a mesh certificate."""
    uris = spiffe_uris(cert)
    if len(uris) != 1:
        raise NotASpiffeCertificate(
            f"certificate {cert.serial_number:x} carries {len(uris)} SPIFFE URI SANs",
            presented=uris or "none",
        )
    return Identity.parse(uris[0])


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, hex: how operators tell roots apart during a rotation."""
    return cert.fingerprint(hashes.SHA256()).hex()


@attrs.frozen
class WorkloadCertificate:
    """Key, chain (leaf first) and trust bundle for one identity."""

    identity: Identity
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def serial(self) -> str:
        return f"{self.leaf.serial_number:x}"

    def valid_at(self, wall: float) -> bool:
        """Whether the leaf is inside its validity window at ``wall`` (seconds since the epoch)."""
        return self.not_before.timestamp() <= wall < self.not_after.timestamp()

    def chain_pem(self) -> bytes:
        return certificates_pem(self.chain)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def roots_pem(self) -> bytes:
        return certificates_pem(self.roots)

    @classmethod
    def from_pem(
        cls, chain_pem: bytes | str, key_pem: bytes | str, roots_pem: bytes | str
    ) -> WorkloadCertificate:
        """Load credentials from PEM (files on disk, a static config) and check they belong together."""
        chain = load_pem_certificates(chain_pem, what="certificate chain")
        roots = load_pem_certificates(roots_pem, what="trust bundle")
        key = load_pem_private_key(key_pem)
        if not chain or not roots:
            raise InvalidCertificate(
                "empty certificate chain or trust bundle", reason="both must hold a certificate"
            )
        if chain[0].public_key() != key.public_key():
            raise InvalidCertificate(
                "key does not match the leaf", reason="the key file belongs to another certificate"
            )
        return cls(identity=identity_of(chain[0]), key=key, chain=tuple(chain), roots=tuple(roots))
