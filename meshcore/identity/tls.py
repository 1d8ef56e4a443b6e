"""HBONE's mutual TLS: the SSL contexts for both ends and the identity checks right after the handshake.

Python's ``ssl`` has no verify callback, so verification is split in two (DESIGN §7): OpenSSL checks
the chain against the trust bundle during the handshake (hostname checking off — HBONE peers have no
DNS names and the client sends no SNI), and the SPIFFE URI SAN is checked here right after the
handshake, before a single application byte is exchanged.

The wire contract (DESIGN §3): TLS 1.3 only, AES-GCM suites, ALPN ``h2``, client certificate
required. Python 3.11 cannot restrict the TLS 1.3 suite list, so the contexts prefer AES-GCM (the
server's order wins, and OpenSSL's default order starts with AES-256-GCM) and the post-handshake check
refuses any session that negotiated something else.

Under TLS 1.3 a server that rejects the client's certificate does so *after* the client's
``do_handshake()`` returned; the client sees the failure on its first read. :func:`tls_failure`
maps the ``ssl`` error of that first read (or of the handshake) to a :class:`TlsHandshakeFailed`
that says what OpenSSL objected to.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from typing import Any

import trio
from cryptography import x509

from meshcore.identity.certs import WorkloadCertificate, fingerprint, identity_of
from meshcore.identity.errors import (
    ForeignTrustDomain,
    NoPeerCertificate,
    TlsHandshakeFailed,
    UnexpectedServerIdentity,
    WeakTlsSession,
)
from meshcore.identity.spiffe import Identity

TlsStream = trio.SSLStream[Any]

ALPN = "h2"
_CLOSED_EARLY = (
    "the peer closed the connection during the handshake — it likely rejected our TLS version or our "
    "certificate (expired, from another CA, or missing)"
)
# OpenSSL's terse reasons, said the way an operator thinks about them.
_REASONS = {
    "UNEXPECTED_EOF_WHILE_READING": _CLOSED_EARLY,
    "UNSUPPORTED_PROTOCOL": "the peer does not speak TLS 1.3, which HBONE requires",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer refused our TLS version; HBONE requires TLS 1.3 on both ends",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS 1.3 (or is not TLS at all)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate; HBONE requires mutual TLS",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate and none was sent",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no common signature algorithm; mesh certificates are ECDSA P-256",
}
ALLOWED_CIPHERS = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"})


def load_cert_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from PEM bytes.

    Python's ``ssl`` only reads certificates and keys from files, so they sit in a private (0700)
    temporary directory for the instant the load takes.
    """
    with tempfile.TemporaryDirectory(prefix="mesh-tls-") as tmp:
        chain_path = os.path.join(tmp, "chain.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(chain_path, "wb") as f:
            f.write(chain_pem)
        ctx.load_cert_chain(chain_path, key_path)


def _base_context(
    purpose: ssl._SSLMethod, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols([ALPN])
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    load_cert_chain(ctx, chain_pem, key_pem)
    return ctx


def server_context(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    """The HBONE listener's context: requires a client certificate chaining to ``bundle_pem``."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, chain_pem, key_pem, bundle_pem)


def client_context(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    """The HBONE dialer's context: presents our chain, verifies the server's against ``bundle_pem``.

    Wrap with ``server_hostname=None`` — HBONE sends no SNI.
    """
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, chain_pem, key_pem, bundle_pem)


def contexts_for(cert: WorkloadCertificate) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for one workload credential set."""
    chain, key, bundle = cert.chain_pem(), cert.key_pem(), cert.roots_pem()
    return server_context(chain, key, bundle), client_context(chain, key, bundle)


class ContextCache:
    """SSL contexts per credential set, so a connection does not pay for building one.

    Building a context parses the key and round-trips the chain through a temporary file; HBONE opens
    connections far more often than certificates rotate. Keyed by identity, leaf serial and the trust
    bundle's fingerprints, so a refreshed leaf or a changed bundle (root rotation) gets a new context.
    The oldest entries are dropped beyond ``max_entries``.
    """

    def __init__(self, max_entries: int = 128) -> None:
        self._max = max_entries
        self._entries: dict[tuple[str, str, tuple[str, ...]], tuple[ssl.SSLContext, ssl.SSLContext]] = {}

    def _get(self, cert: WorkloadCertificate) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        key = (cert.identity.uri, cert.serial, tuple(fingerprint(r) for r in cert.roots))
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = contexts_for(cert)
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]
        return found

    def server(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        return self._get(cert)[0]

    def client(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        return self._get(cert)[1]

    def __len__(self) -> int:
        return len(self._entries)


def load_pem_credentials(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> WorkloadCertificate:
    """Read cert chain + key + trust bundle (PEM) into a checked :class:`WorkloadCertificate`."""
    return WorkloadCertificate.from_pem(chain_pem, key_pem, bundle_pem)


def _peer_name(stream: TlsStream) -> str:
    inner = stream.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            host, port = inner.socket.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            pass
    return "peer"


def tls_failure(exc: BaseException, *, peer: str) -> TlsHandshakeFailed:
    """A typed error for a failed handshake or a first read that surfaced a TLS alert."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = f"certificate verification failed: {cause.verify_message}"
    elif isinstance(cause, ssl.SSLError) and cause.reason in _REASONS:
        reason = f"{_REASONS[cause.reason]} (OpenSSL: {cause.reason})"
    elif isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
    else:
        reason = f"connection closed during handshake ({exc!r})"
    return TlsHandshakeFailed(f"TLS handshake with {peer} failed: {reason}", peer=peer, reason=reason)


def closed_after_handshake(peer: str) -> TlsHandshakeFailed:
    """For a client whose first read after the handshake hits end-of-stream.

    A TLS 1.3 server checks the client's certificate after the client's ``do_handshake()`` returned;
    trio's SSLStream does not flush the alert when the server's handshake fails, so the client only
    sees the connection close. Call this when the first read returns ``b""``.
    """
    return TlsHandshakeFailed(
        f"{peer} closed the connection right after the TLS handshake", peer=peer, reason=_CLOSED_EARLY
    )


def _check_session(stream: TlsStream, peer: str) -> Identity:
    version, cipher = stream.version(), stream.cipher()
    alpn = stream.selected_alpn_protocol()
    cipher_name = cipher[0] if cipher else None
    if version != "TLSv1.3" or cipher_name not in ALLOWED_CIPHERS or alpn != ALPN:
        raise WeakTlsSession(
            f"TLS session with {peer} is not HBONE-conformant",
            presented=f"{version}/{cipher_name}/alpn={alpn}",
            expected=f"TLSv1.3/AES-GCM/alpn={ALPN}",
        )
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise NoPeerCertificate(f"{peer} presented no certificate", peer=peer)
    return identity_of(x509.load_der_x509_certificate(der))


def verify_peer_server(stream: TlsStream, expected: Sequence[str | Identity]) -> Identity:
    """Client side, after the handshake: the server's SPIFFE ID must be one we expect for this hop."""
    peer = _peer_name(stream)
    presented = _check_session(stream, peer)
    wanted = [str(e) for e in expected]
    if presented.uri not in wanted:
        raise UnexpectedServerIdentity(
            f"server {peer} presented {presented.uri}, expected one of {wanted}",
            presented=presented.uri,
            expected=wanted,
        )
    return presented


def verify_peer_client(stream: TlsStream, trust_domain: str) -> Identity:
    """Server side, after the handshake: any client of our trust domain; *which* is authorization's call."""
    peer = _peer_name(stream)
    presented = _check_session(stream, peer)
    if presented.trust_domain != trust_domain:
        raise ForeignTrustDomain(
            f"client {peer} presented {presented.uri} outside trust domain {trust_domain!r}",
            presented=presented.uri,
            expected=trust_domain,
        )
    return presented


async def handshake(stream: TlsStream) -> None:
    """``do_handshake`` with OpenSSL's complaint turned into a :class:`TlsHandshakeFailed`."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        raise tls_failure(exc, peer=_peer_name(stream)) from exc


__all__ = [
    "ALPN",
    "ContextCache",
    "TlsStream",
    "client_context",
    "closed_after_handshake",
    "contexts_for",
    "handshake",
    "load_cert_chain",
    "load_pem_credentials",
    "server_context",
    "tls_failure",
    "verify_peer_client",
    "verify_peer_server",
]
