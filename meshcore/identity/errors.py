"""Identity and mTLS errors; each says what was presented, what was expected and what to check."""

from __future__ import annotations

from meshcore.errors import MeshError


class IdentityError(MeshError):
    """Base of every identity failure."""


class InvalidSpiffeId(IdentityError):
    """A string that should be a mesh SPIFFE ID is not one."""

    hint = (
        "a mesh identity looks like spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>; "
        "got {value!r}"
    )


class TlsHandshakeFailed(IdentityError):
    """The TLS handshake itself failed (version, cipher, chain verification, missing client cert)."""

    response_flag = "UF"
    hint = (
        "TLS with {peer} failed: {reason}; check that both sides speak TLS 1.3, share a trust root in "
        "their bundles and hold unexpired certificates"
    )


class PeerIdentityRejected(IdentityError):
    """The handshake completed but the peer's certificate or session is not acceptable for HBONE."""

    response_flag = "UF"


class NoPeerCertificate(PeerIdentityRejected):
    hint = "the peer {peer} presented no certificate; HBONE requires mutual TLS on both ends"


class NotASpiffeCertificate(PeerIdentityRejected):
    hint = (
        "the peer's certificate must carry exactly one spiffe:// URI SAN, it presented {presented}; "
        "was it issued by the mesh CA?"
    )


class ForeignTrustDomain(PeerIdentityRejected):
    hint = (
        "the peer presented {presented}, whose trust domain is not {expected!r}; "
        "check the peer's mesh CA and trust domain setting"
    )


class UnexpectedServerIdentity(PeerIdentityRejected):
    hint = (
        "the server presented {presented} but this connection expected one of {expected}; check which "
        "workload answers on that address and the service's subject_alt_names"
    )


class WeakTlsSession(PeerIdentityRejected):
    hint = "negotiated {presented}, HBONE requires {expected}; the peer is not a conforming HBONE proxy"


class CertificateUnavailable(IdentityError):
    """No valid certificate can be handed out for an identity right now."""

    response_flag = "UF"
    hint = (
        "no valid certificate for {identity}: {reason}; check that istiod_lite is reachable and that "
        "this node runs a workload with that identity"
    )


class CertificateRequestFailed(IdentityError):
    """istiod_lite could not be reached or answered something that is not a certificate."""

    hint = "requesting a certificate for {identity} from {ca} failed: {reason}"


class CertificateRequestRefused(CertificateRequestFailed):
    """istiod_lite refused the request and said why."""

    hint = "istiod_lite refused the certificate for {identity}: {reason}"


class InvalidCertificate(IdentityError):
    """PEM or certificate contents that cannot be used as mesh credentials."""

    hint = "{reason}; check the file or the CA response that supplied it"
