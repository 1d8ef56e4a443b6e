"""istiod_lite's certificate authority: the mesh root, workload certificates and the trust bundle.

Two ways to hold the signing key, as in Istio:

* **self-signed** (the default): a P-256 root valid for 10 years, created on first start under
  ``<state-dir>/ca/`` (keys mode 0600) and reused on every restart, so certificates issued before a
  restart stay trusted after it;
* **plugged in**: a directory with ``ca-cert.pem`` (the signing, usually intermediate, certificate),
  ``ca-key.pem``, ``cert-chain.pem`` (from ``ca-cert`` up towards the root) and ``root-cert.pem``
  (the root, or several roots). Workload certificates then come with the intermediates.

Workload certificates follow DESIGN §3 exactly: ECDSA P-256, an empty subject, one critical URI SAN,
EKU serverAuth+clientAuth, NotBefore = now - 2 min (clock skew between nodes), and a TTL clamped to
(24 h default, 90 days max, never past any certificate of the signing chain).

Root rotation in the self-signed mode is staged so no handshake fails: :meth:`add_root` puts a new
root in the trust bundle (proxies pick it up with their next certificate), :meth:`activate_root` makes
it the signer, and :meth:`retire_root` removes the old one once every leaf it signed has been reissued.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshcore.errors import MeshError
from meshcore.identity.certs import (
    certificates_pem,
    fingerprint,
    load_pem_certificates,
    load_pem_private_key,
    private_key_pem,
)
from meshcore.identity.spiffe import DEFAULT_TRUST_DOMAIN, Identity

Clock = Callable[[], datetime]

ROOT_LIFETIME = timedelta(days=3650)
DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
MAX_WORKLOAD_TTL = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=2)
SERVING_TTL = timedelta(days=365)


class CaError(MeshError):
    """The CA cannot start or cannot perform an operation."""

    hint = "{reason}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class IssuedCertificate:
    """A signed leaf with what a peer needs to verify it: intermediates and the trust bundle."""

    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def pem_list(self) -> list[str]:
        """``[leaf, intermediates…, roots…]`` — the CSR service's answer, in Istio's order."""
        return [certificates_pem([c]).decode() for c in (*self.chain, *self.roots)]


def clamp_ttl(requested_seconds: float | None) -> timedelta:
    """Missing or non-positive → 24 h; above 90 days → 90 days. Clamped, never refused."""
    if requested_seconds is None or requested_seconds <= 0:
        return DEFAULT_WORKLOAD_TTL
    return min(timedelta(seconds=requested_seconds), MAX_WORKLOAD_TTL)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_root(trust_domain: str, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            # Unique per root: during a rotation two roots coexist and must not share a subject.
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"istiod_lite root {now:%Y-%m-%d} {secrets.token_hex(4)}"
            ),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _RootStore:
    """The self-signed mode's files: ``roots/<fp>.{cert,key}.pem``, ``active``, and PEM exports."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.roots_dir = directory / "roots"

    def load(self) -> tuple[dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]], str | None]:
        roots: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
        if self.roots_dir.is_dir():
            for cert_path in sorted(self.roots_dir.glob("*.cert.pem")):
                fp = cert_path.name.removesuffix(".cert.pem")
                key_path = self.roots_dir / f"{fp}.key.pem"
                cert = load_pem_certificates(cert_path.read_bytes(), what=str(cert_path))[0]
                roots[fp] = (cert, load_pem_private_key(key_path.read_bytes()))
        active_path = self.dir / "active"
        active = active_path.read_text().strip() if active_path.exists() else None
        return roots, active

    def save_root(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> str:
        self.roots_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fp = fingerprint(cert)
        _write_private(self.roots_dir / f"{fp}.key.pem", private_key_pem(key))
        _write_public(self.roots_dir / f"{fp}.cert.pem", certificates_pem([cert]))
        return fp

    def remove_root(self, fp: str) -> None:
        for suffix in (".cert.pem", ".key.pem"):
            (self.roots_dir / f"{fp}{suffix}").unlink(missing_ok=True)

    def save_state(
        self, active: str, active_cert: x509.Certificate, bundle: Sequence[x509.Certificate]
    ) -> None:
        _write_public(self.dir / "active", f"{active}\n".encode())
        # Exports for whoever hands the mesh root to proxies (meshctl, a ConfigMap).
        _write_public(self.dir / "root-cert.pem", certificates_pem([active_cert]))
        _write_public(self.dir / "trust-bundle.pem", certificates_pem(bundle))


class CertificateAuthority:
    """Signs workload and serving certificates; holds the trust bundle."""

    def __init__(
        self,
        *,
        trust_domain: str,
        signer_cert: x509.Certificate,
        signer_key: ec.EllipticCurvePrivateKey,
        intermediates: Sequence[x509.Certificate],
        roots: Sequence[x509.Certificate],
        clock: Clock = _utcnow,
        store: _RootStore | None = None,
        root_keys: dict[str, ec.EllipticCurvePrivateKey] | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self._signer_cert = signer_cert
        self._signer_key = signer_key
        self._intermediates = tuple(intermediates)
        self._roots = tuple(roots)
        self._clock = clock
        self._store = store
        self._root_keys = dict(root_keys or {})

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls, state_dir: Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, clock: Clock = _utcnow
    ) -> CertificateAuthority:
        """The self-signed CA under ``state_dir/ca``: reuse the stored root, or create one on first start."""
        store = _RootStore(Path(state_dir) / "ca")
        roots, active = store.load()
        if not roots:
            cert, key = _make_root(trust_domain, clock())
            active = store.save_root(cert, key)
            roots = {active: (cert, key)}
            store.save_state(active, cert, [cert])
        if active not in roots:
            raise CaError(
                f"active root {active!r} missing under {store.roots_dir}",
                reason=f"restore {store.roots_dir} or remove {store.dir / 'active'} to pick a root",
            )
        cert, key = roots[active]
        return cls(
            trust_domain=trust_domain,
            signer_cert=cert,
            signer_key=key,
            intermediates=(),
            roots=[c for c, _ in roots.values()],
            clock=clock,
            store=store,
            root_keys={fp: k for fp, (_, k) in roots.items()},
        )

    @classmethod
    def from_plugged_dir(
        cls, ca_dir: Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, clock: Clock = _utcnow
    ) -> CertificateAuthority:
        """An operator-provided CA (Istio's ``cacerts`` layout); signs with ``ca-cert.pem``'s key."""
        ca_dir = Path(ca_dir)
        files = {
            name: ca_dir / name for name in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")
        }
        missing = [n for n, p in files.items() if not p.is_file()]
        if missing:
            raise CaError(
                f"plugged-in CA directory {ca_dir} lacks {', '.join(missing)}",
                reason="a plugged-in CA needs ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem",
            )
        signer = load_pem_certificates(files["ca-cert.pem"].read_bytes(), what=str(files["ca-cert.pem"]))[0]
        key = load_pem_private_key(files["ca-key.pem"].read_bytes())
        chain = load_pem_certificates(files["cert-chain.pem"].read_bytes(), what=str(files["cert-chain.pem"]))
        roots = load_pem_certificates(files["root-cert.pem"].read_bytes(), what=str(files["root-cert.pem"]))
        if signer.public_key() != key.public_key():
            raise CaError("ca-key.pem does not belong to ca-cert.pem", reason=f"check the files in {ca_dir}")
        try:
            constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CaError("ca-cert.pem is not a CA certificate", reason="it needs basicConstraints CA:TRUE")
        root_fps = {fingerprint(r) for r in roots}
        intermediates = [c for c in chain if fingerprint(c) not in root_fps]
        if fingerprint(signer) not in root_fps and (not intermediates or intermediates[0] != signer):
            intermediates.insert(0, signer)
        return cls(
            trust_domain=trust_domain,
            signer_cert=signer,
            signer_key=key,
            intermediates=intermediates,
            roots=roots,
            clock=clock,
        )

    # ---- what peers need ----------------------------------------------------------------------

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The trust bundle: every root currently trusted (several during a rotation)."""
        return self._roots

    @property
    def root_fingerprints(self) -> list[str]:
        return [fingerprint(r) for r in self._roots]

    @property
    def active_root_fingerprint(self) -> str:
        """Fingerprint of the root the signing chain ends in."""
        if self._signer_cert in self._roots:
            return fingerprint(self._signer_cert)
        top = self._intermediates[-1] if self._intermediates else self._signer_cert
        for root in self._roots:
            if root.subject == top.issuer:
                return fingerprint(root)
        raise CaError(
            "the signing chain does not end in a trusted root",
            reason="root-cert.pem must hold the root that issued cert-chain.pem's last certificate",
        )

    def trust_bundle_pem(self) -> bytes:
        return certificates_pem(self._roots)

    # ---- signing ------------------------------------------------------------------------------

    def _not_after(self, now: datetime, ttl: timedelta) -> datetime:
        ceiling = min(c.not_valid_after_utc for c in (self._signer_cert, *self._intermediates))
        return min(now + ttl, ceiling)

    def _leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        san: x509.SubjectAlternativeName,
        ttl: timedelta,
        *,
        san_critical: bool,
    ) -> x509.Certificate:
        now = self._clock()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._signer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(self._not_after(now, ttl))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._signer_key.public_key()),
                critical=False,
            )
            .add_extension(san, critical=san_critical)
            .sign(self._signer_key, hashes.SHA256())
        )

    def _issued(self, leaf: x509.Certificate) -> IssuedCertificate:
        return IssuedCertificate(chain=(leaf, *self._intermediates), roots=self._roots)

    def issue_workload(
        self, public_key: ec.EllipticCurvePublicKey, identity: Identity, ttl_seconds: float | None = None
    ) -> IssuedCertificate:
        """Sign a workload certificate for ``identity``; the caller has already authorized the request.

        The subject is empty, so the URI SAN is the only name and RFC 5280 makes it critical.
        """
        if identity.trust_domain != self.trust_domain:
            raise CaError(
                f"{identity} is outside trust domain {self.trust_domain!r}",
                reason="request an identity in the mesh's trust domain",
            )
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise CaError(
                f"workload key uses {public_key.curve.name}", reason="workload keys must be ECDSA P-256"
            )
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
        return self._issued(self._leaf(public_key, san, clamp_ttl(ttl_seconds), san_critical=True))

    def issue_serving(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str] = (), ttl: timedelta = SERVING_TTL
    ) -> tuple[IssuedCertificate, ec.EllipticCurvePrivateKey]:
        """istiod_lite's own TLS certificate, with DNS/IP SANs so clients verify it like any server."""
        key = _new_key()
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if not names:
            raise CaError("a serving certificate needs at least one name", reason="pass DNS names or IPs")
        san = x509.SubjectAlternativeName(names)
        return self._issued(self._leaf(key.public_key(), san, ttl, san_critical=True)), key

    # ---- rotation (self-signed mode) ----------------------------------------------------------

    def _require_store(self) -> _RootStore:
        if self._store is None:
            raise CaError(
                "root rotation needs the self-signed CA",
                reason="with a plugged-in CA, rotate by replacing the files in its directory",
            )
        return self._store

    def add_root(self, *, activate: bool = False) -> str:
        """Create a new root and trust it; with ``activate`` also sign with it from now on."""
        store = self._require_store()
        cert, key = _make_root(self.trust_domain, self._clock())
        fp = store.save_root(cert, key)
        self._root_keys[fp] = key
        self._roots = (*self._roots, cert)
        if activate:
            self.activate_root(fp)
        else:
            store.save_state(fingerprint(self._signer_cert), self._signer_cert, self._roots)
        return fp

    def activate_root(self, fp: str) -> None:
        store = self._require_store()
        match = [r for r in self._roots if fingerprint(r) == fp]
        if not match:
            raise CaError(
                f"no trusted root with fingerprint {fp}", reason=f"trusted: {self.root_fingerprints}"
            )
        self._signer_cert, self._signer_key = match[0], self._root_keys[fp]
        store.save_state(fp, self._signer_cert, self._roots)

    def retire_root(self, fp: str) -> None:
        """Stop trusting a root; leaves it signed are no longer accepted anywhere that refreshes."""
        store = self._require_store()
        if fp == fingerprint(self._signer_cert):
            raise CaError("cannot retire the active root", reason="activate another root first")
        if fp not in self.root_fingerprints:
            raise CaError(
                f"no trusted root with fingerprint {fp}", reason=f"trusted: {self.root_fingerprints}"
            )
        self._roots = tuple(r for r in self._roots if fingerprint(r) != fp)
        self._root_keys.pop(fp, None)
        store.remove_root(fp)
        store.save_state(fingerprint(self._signer_cert), self._signer_cert, self._roots)
