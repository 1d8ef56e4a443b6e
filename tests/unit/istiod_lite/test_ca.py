"""istiod_lite's CA: leaf shape (checked by openssl), TTL clamping, persistence, plugging, rotation."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from istiod_lite.ca import CaError, CertificateAuthority, clamp_ttl
from meshcore.identity.certs import certificates_pem, fingerprint, private_key_pem
from meshcore.identity.spiffe import Identity

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
WORKLOAD = Identity("cluster.local", "prod", "search-api")


def fixed_clock() -> datetime:
    return NOW


def workload_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30, check=False)


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    days: int,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key or key, hashes.SHA256())
    )


def plugged_dir(directory: Path, *, intermediate_days: int = 365) -> tuple[Path, x509.Certificate]:
    """Istio's cacerts layout: an operator root and an intermediate that istiod_lite signs with."""
    root_key, inter_key = workload_key(), workload_key()
    root = _ca_cert("Operator Root", root_key, None, None, 3650)
    inter = _ca_cert("Mesh Intermediate", inter_key, root.subject, root_key, intermediate_days)
    directory.mkdir(parents=True)
    (directory / "ca-cert.pem").write_bytes(certificates_pem([inter]))
    (directory / "ca-key.pem").write_bytes(private_key_pem(inter_key))
    (directory / "cert-chain.pem").write_bytes(certificates_pem([inter, root]))
    (directory / "root-cert.pem").write_bytes(certificates_pem([root]))
    return directory, root


@needs_openssl
def test_openssl_shows_the_istio_leaf_shape(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "state")
    issued = ca.issue_workload(workload_key().public_key(), WORKLOAD, 3600)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(certificates_pem([issued.leaf]))
    text = openssl("x509", "-in", str(leaf), "-noout", "-text").stdout
    lines = [line.strip() for line in text.splitlines()]
    san_header = lines.index("X509v3 Subject Alternative Name: critical")
    assert lines[san_header + 1] == f"URI:{WORKLOAD.uri}"
    assert "NIST CURVE: P-256" in lines
    eku = lines.index("X509v3 Extended Key Usage:")
    assert lines[eku + 1] == "TLS Web Server Authentication, TLS Web Client Authentication"
    assert "Subject:" in lines  # the subject line is present and empty
    assert "CA:FALSE" in lines


@needs_openssl
def test_openssl_verifies_a_plugged_in_chain(tmp_path: Path) -> None:
    ca_dir, root = plugged_dir(tmp_path / "cacerts")
    ca = CertificateAuthority.from_plugged_dir(ca_dir)
    issued = ca.issue_workload(workload_key().public_key(), WORKLOAD)
    pems = issued.pem_list()
    assert len(pems) == 3  # leaf, intermediate, root
    assert issued.roots == (root,)
    (tmp_path / "leaf.pem").write_text(pems[0])
    (tmp_path / "chain.pem").write_text("".join(pems[1:-1]))
    (tmp_path / "root.pem").write_text(pems[-1])
    result = openssl(
        "verify",
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-untrusted",
        str(tmp_path / "chain.pem"),
        str(tmp_path / "leaf.pem"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_verifies_a_self_signed_root_leaf(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "state")
    issued = ca.issue_workload(workload_key().public_key(), WORKLOAD)
    (tmp_path / "leaf.pem").write_bytes(certificates_pem([issued.leaf]))
    result = openssl(
        "verify", "-CAfile", str(tmp_path / "state" / "ca" / "trust-bundle.pem"), str(tmp_path / "leaf.pem")
    )
    assert result.returncode == 0, result.stderr


def test_leaf_fields(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, clock=fixed_clock)
    leaf = ca.issue_workload(workload_key().public_key(), WORKLOAD).leaf
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD.uri]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=2)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, timedelta(hours=24)),
        (0, timedelta(hours=24)),
        (-5, timedelta(hours=24)),
        (3600, timedelta(hours=1)),
        (90 * 86400, timedelta(days=90)),
        (365 * 86400, timedelta(days=90)),
    ],
)
def test_ttl_clamp(requested: int | None, expected: timedelta) -> None:
    assert clamp_ttl(requested) == expected


def test_ttl_above_max_is_clamped_when_issuing(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, clock=fixed_clock)
    leaf = ca.issue_workload(workload_key().public_key(), WORKLOAD, 10 * 365 * 86400).leaf
    assert leaf.not_valid_after_utc == NOW + timedelta(days=90)


def test_leaf_never_outlives_its_signer(tmp_path: Path) -> None:
    ca_dir, _ = plugged_dir(tmp_path / "cacerts", intermediate_days=10)
    ca = CertificateAuthority.from_plugged_dir(ca_dir, clock=fixed_clock)
    issued = ca.issue_workload(workload_key().public_key(), WORKLOAD, 30 * 86400)
    assert issued.leaf.not_valid_after_utc == issued.chain[1].not_valid_after_utc == NOW + timedelta(days=10)


def test_root_survives_restart_with_private_key_mode(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path)
    before_restart = first.issue_workload(workload_key().public_key(), WORKLOAD).leaf
    second = CertificateAuthority.load_or_create(tmp_path)
    assert first.root_fingerprints == second.root_fingerprints
    before_restart.verify_directly_issued_by(second.roots[0])  # old leaves stay valid after a restart
    after_restart = second.issue_workload(workload_key().public_key(), WORKLOAD).leaf
    after_restart.verify_directly_issued_by(first.roots[0])
    assert first.active_root_fingerprint == second.active_root_fingerprint
    keys = list((tmp_path / "ca" / "roots").glob("*.key.pem"))
    assert len(keys) == 1
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    root = x509.load_pem_x509_certificate((tmp_path / "ca" / "root-cert.pem").read_bytes())
    assert fingerprint(root) == first.active_root_fingerprint
    assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=3650)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)


def test_rotation_steps_persist(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    old = ca.active_root_fingerprint
    new = ca.add_root()
    assert CertificateAuthority.load_or_create(tmp_path).active_root_fingerprint == old
    assert set(CertificateAuthority.load_or_create(tmp_path).root_fingerprints) == {old, new}
    ca.activate_root(new)
    with pytest.raises(CaError, match="cannot retire the active root"):
        ca.retire_root(new)
    ca.retire_root(old)
    reloaded = CertificateAuthority.load_or_create(tmp_path)
    assert reloaded.active_root_fingerprint == new and reloaded.root_fingerprints == [new]
    bundle = x509.load_pem_x509_certificates((tmp_path / "ca" / "trust-bundle.pem").read_bytes())
    assert [fingerprint(c) for c in bundle] == [new]


def test_plugged_dir_missing_files_named(tmp_path: Path) -> None:
    ca_dir, _ = plugged_dir(tmp_path / "cacerts")
    (ca_dir / "cert-chain.pem").unlink()
    with pytest.raises(CaError, match=r"lacks cert-chain\.pem"):
        CertificateAuthority.from_plugged_dir(ca_dir)


def test_plugged_dir_key_must_match(tmp_path: Path) -> None:
    ca_dir, _ = plugged_dir(tmp_path / "cacerts")
    (ca_dir / "ca-key.pem").write_bytes(private_key_pem(workload_key()))
    with pytest.raises(CaError, match=r"does not belong to ca-cert\.pem"):
        CertificateAuthority.from_plugged_dir(ca_dir)


def test_refuses_foreign_trust_domain_and_other_curves(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    with pytest.raises(CaError, match="outside trust domain"):
        ca.issue_workload(workload_key().public_key(), Identity("example.org", "prod", "x"))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(CaError, match="P-256"):
        ca.issue_workload(p384, WORKLOAD)


def test_serving_certificate_names(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    issued, key = ca.issue_serving(["istiod.istio-system.svc"], ["127.0.0.1"])
    san = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert issued.leaf.public_key() == key.public_key()
