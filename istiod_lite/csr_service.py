"""The ``/v1/ca`` handler: turn an authenticated node's CSR into a workload certificate, or say why not.

Checks, in the order a confused operator would want to hear about them:

1. the message is a well-formed request and the requested identity is a mesh SPIFFE ID;
2. the CSR parses, its self-signature verifies, and its key is ECDSA P-256;
3. the CSR's SANs are exactly one URI, equal to the requested identity (a node cannot smuggle a
   second name into the certificate);
4. the identity is in our trust domain;
5. **node authorization**: the identity has at least one workload scheduled on the caller's node
   in the current config (a compromised ztunnel can only mint identities it already serves).

The requested TTL is clamped by the CA, never refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar, Protocol

import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from istiod_lite.tokens import Caller
from meshcore.errors import MeshError
from meshcore.identity.ca_wire import CsrAnswer, CsrRequest, WireError
from meshcore.identity.errors import InvalidSpiffeId
from meshcore.identity.spiffe import Identity
from meshcore.telemetry.logs import get_logger

_log = get_logger("istiod_lite.ca")


class CsrRefused(MeshError):
    """Base of every refusal; ``code`` is what travels on the wire."""

    code: ClassVar[str] = "Refused"


class MalformedRequest(CsrRefused):
    code: ClassVar[str] = "MalformedRequest"
    hint = "{reason}; the request is {{csr, ttl_seconds, identity}} as JSON"


class InvalidCsr(CsrRefused):
    code: ClassVar[str] = "InvalidCsr"
    hint = "{reason}; generate an ECDSA P-256 key and a CSR signed with it"


class IdentityMismatch(CsrRefused):
    code: ClassVar[str] = "IdentityMismatch"
    hint = "the CSR must carry exactly one SAN, the URI {expected}; it carries {presented}"


class ForeignIdentity(CsrRefused):
    code: ClassVar[str] = "ForeignTrustDomain"
    hint = "this CA signs only for trust domain {expected!r}; check the proxy's trust domain setting"


class NodeNotAuthorized(CsrRefused):
    code: ClassVar[str] = "NodeNotAuthorized"
    hint = (
        "a node may only obtain certificates for identities of workloads scheduled on it; check that a pod "
        "with service account {service_account!r} in namespace {namespace!r} runs on node {node!r}"
    )


class WorkloadPlacement(Protocol):
    """Where workloads run, by identity; istiod_lite's config index implements this."""

    def has_workload_on_node(self, identity: str, node: str) -> bool: ...


class StaticPlacement:
    """An in-memory :class:`WorkloadPlacement`: a set of (identity, node) pairs, editable at runtime."""

    def __init__(self, placements: Iterable[tuple[str, str]] = ()) -> None:
        self._nodes: dict[str, set[str]] = defaultdict(set)
        for identity, node in placements:
            self.place(identity, node)

    def place(self, identity: str, node: str) -> None:
        self._nodes[Identity.parse(identity).uri].add(node)

    def remove(self, identity: str, node: str) -> None:
        self._nodes[Identity.parse(identity).uri].discard(node)

    def has_workload_on_node(self, identity: str, node: str) -> bool:
        return node in self._nodes.get(identity, ())


class CsrService:
    """Signs authorized CSRs; ``await service(ws, caller)`` is the control server's ``/v1/ca`` handler."""

    def __init__(self, ca: CertificateAuthority, placement: WorkloadPlacement) -> None:
        self._ca = ca
        self._placement = placement

    def sign(self, request: CsrRequest, caller: Caller) -> CsrAnswer:
        """Decide one request: a chain, or :class:`CsrRefused` explaining the refusal."""
        try:
            identity = Identity.parse(request.identity)
        except InvalidSpiffeId as exc:
            raise MalformedRequest(
                f"requested identity {request.identity!r} is not a SPIFFE ID", reason=str(exc)
            ) from exc
        csr = _load_csr(request.csr_pem)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise InvalidCsr("CSR key is not ECDSA P-256", reason="workload keys must be ECDSA P-256")
        presented = _csr_sans(csr)
        if presented != [identity.uri]:
            raise IdentityMismatch(
                f"CSR names {presented or 'nothing'} but the request is for {identity.uri}",
                expected=identity.uri,
                presented=presented or "no SAN",
            )
        if identity.trust_domain != self._ca.trust_domain:
            raise ForeignIdentity(
                f"{identity.uri} is outside trust domain {self._ca.trust_domain!r}",
                expected=self._ca.trust_domain,
            )
        if caller.workload is not None:
            if caller.workload != f"{identity.namespace}/{identity.service_account}":
                raise NodeNotAuthorized(
                    f"{caller.subject or caller.workload} may obtain only its own identity "
                    f"(ns/{caller.workload.replace('/', '/sa/')}), not {identity.uri}",
                    namespace=identity.namespace,
                    service_account=identity.service_account,
                    node=caller.node,
                )
        elif not self._placement.has_workload_on_node(identity.uri, caller.node):
            raise NodeNotAuthorized(
                f"identity {identity.uri} has no workload on node {caller.node!r}",
                namespace=identity.namespace,
                service_account=identity.service_account,
                node=caller.node,
            )
        issued = self._ca.issue_workload(public_key, identity, request.ttl_seconds)
        _log.info(
            "certificate issued",
            identity=identity.uri,
            node=caller.node,
            serial=f"{issued.leaf.serial_number:x}",
            not_after=issued.leaf.not_valid_after_utc.isoformat(),
        )
        return CsrAnswer(cert_chain=tuple(issued.pem_list()), roots=len(issued.roots))

    def answer(self, message: str | bytes, caller: Caller) -> CsrAnswer:
        """One wire message in, one wire answer out (refusals included)."""
        try:
            return self.sign(CsrRequest.decode(message), caller)
        except WireError as exc:
            refusal: CsrRefused = MalformedRequest(f"bad /v1/ca request: {exc}", reason=str(exc))
        except CsrRefused as exc:
            refusal = exc
        _log.warning("certificate refused", node=caller.node, code=refusal.code, error=str(refusal))
        return CsrAnswer(error_code=refusal.code, error_message=str(refusal))

    async def __call__(self, ws: trio_websocket.WebSocketConnection, caller: Caller) -> None:
        """Answer requests on one connection until the client closes it."""
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            await ws.send_message(self.answer(message, caller).encode())


def _load_csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise InvalidCsr("CSR is not a PEM certificate signing request", reason=str(exc)) from exc
    if not csr.is_signature_valid:
        raise InvalidCsr(
            "CSR signature does not verify", reason="the CSR was altered or signed with another key"
        )
    return csr


def _csr_sans(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        n.value if isinstance(n, x509.UniformResourceIdentifier) else f"{type(n).__name__}:{n.value}"
        for n in san
    ]
