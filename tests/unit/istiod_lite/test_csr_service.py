"""The /v1/ca decision: what is signed, what is refused and why.

No sockets here; the handler runs end to end in tests/integration/test_identity_control_plane.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from istiod_lite.csr_service import (
    CsrRefused,
    CsrService,
    ForeignIdentity,
    IdentityMismatch,
    InvalidCsr,
    MalformedRequest,
    NodeNotAuthorized,
    StaticPlacement,
)
from istiod_lite.tokens import Caller
from meshcore.identity.ca_wire import CsrAnswer, CsrRequest

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
SEARCH = "spiffe://cluster.local/ns/prod/sa/search-api"
NODE_A = Caller(node="node-a")


def csr_for(*names: x509.GeneralName, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


@pytest.fixture
def service(tmp_path: Path) -> CsrService:
    ca = CertificateAuthority.load_or_create(tmp_path, clock=lambda: NOW)
    return CsrService(ca, StaticPlacement([(SEARCH, "node-a")]))


def test_signs_for_a_workload_on_the_callers_node(service: CsrService) -> None:
    answer = service.sign(CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=3600), NODE_A)
    assert answer.roots == 1 and len(answer.cert_chain) == 2
    leaf = x509.load_pem_x509_certificate(answer.cert_chain[0].encode())
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=1)


def test_ttl_above_max_is_clamped_not_refused(service: CsrService) -> None:
    request = CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=400 * 86400)
    leaf = x509.load_pem_x509_certificate(service.sign(request, NODE_A).cert_chain[0].encode())
    assert leaf.not_valid_after_utc == NOW + timedelta(days=90)


def _tampered_csr() -> str:
    pem = csr_for(uri(SEARCH))
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    broken = bytearray(der)
    broken[-5] ^= 0xFF  # inside the signature
    return x509.load_der_x509_csr(bytes(broken)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("csr", "identity", "caller", "error", "says"),
    [
        (
            lambda: csr_for(uri(SEARCH)),
            SEARCH,
            Caller(node="node-b"),
            NodeNotAuthorized,
            f"identity {SEARCH} has no workload on node 'node-b'",
        ),
        (
            lambda: csr_for(uri("spiffe://cluster.local/ns/prod/sa/admin")),
            SEARCH,
            NODE_A,
            IdentityMismatch,
            "spiffe://cluster.local/ns/prod/sa/admin",
        ),
        (
            lambda: csr_for(uri(SEARCH), x509.DNSName("evil.example")),
            SEARCH,
            NODE_A,
            IdentityMismatch,
            "DNSName:evil.example",
        ),
        (lambda: csr_for(), SEARCH, NODE_A, IdentityMismatch, "no SAN"),
        (
            lambda: csr_for(uri("spiffe://example.org/ns/prod/sa/search-api")),
            "spiffe://example.org/ns/prod/sa/search-api",
            NODE_A,
            ForeignIdentity,
            "cluster.local",
        ),
        (
            lambda: csr_for(uri(SEARCH), key=ec.generate_private_key(ec.SECP384R1())),
            SEARCH,
            NODE_A,
            InvalidCsr,
            "P-256",
        ),
        (_tampered_csr, SEARCH, NODE_A, InvalidCsr, "signature does not verify"),
        (
            lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            SEARCH,
            NODE_A,
            InvalidCsr,
            "not a PEM certificate signing request",
        ),
        (lambda: csr_for(uri(SEARCH)), "search-api", NODE_A, MalformedRequest, "not a SPIFFE ID"),
    ],
)
def test_refusals_say_why(
    service: CsrService, csr: object, identity: str, caller: Caller, error: type[CsrRefused], says: str
) -> None:
    assert callable(csr)
    with pytest.raises(error) as info:
        service.sign(CsrRequest(csr_pem=csr(), identity=identity, ttl_seconds=None), caller)
    assert says in str(info.value)


def test_answer_carries_refusals_on_the_wire(service: CsrService) -> None:
    request = CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=None)
    answer = CsrAnswer.decode(service.answer(request.encode(), Caller(node="node-b")).encode())
    assert answer.error_code == "NodeNotAuthorized"
    assert "has no workload on node 'node-b'" in answer.error_message
    garbage = CsrAnswer.decode(service.answer("{not json", NODE_A).encode())
    assert garbage.error_code == "MalformedRequest" and "not JSON" in garbage.error_message


def test_placement_changes_take_effect(tmp_path: Path) -> None:
    placement = StaticPlacement()
    svc = CsrService(CertificateAuthority.load_or_create(tmp_path), placement)
    request = CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=None)
    with pytest.raises(NodeNotAuthorized):
        svc.sign(request, NODE_A)
    placement.place(SEARCH, "node-a")
    assert svc.sign(request, NODE_A).roots == 1
    placement.remove(SEARCH, "node-a")
    with pytest.raises(NodeNotAuthorized):
        svc.sign(request, NODE_A)
