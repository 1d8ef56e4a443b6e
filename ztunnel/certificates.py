"""The certificates of this node's identities and the HBONE TLS contexts built from them.

One credential set per identity with a workload on this node (DESIGN §3): the inbound listener of a
workload presents its identity's certificate, and outbound tunnels are opened under the source
workload's identity. Contexts are built once per certificate (loading a chain into ``ssl`` is not
free) and rebuilt when a new certificate is installed.

Where certificates come from: ``load`` (files from ``--cert-dir``, read on demand), or certificates
fetched elsewhere (the :class:`meshcore.identity.manager.CertificateManager` with istiod_lite) handed
to :meth:`CertificateStore.install`. A renewed certificate is loaded *into the existing contexts*, so
listeners and pooled dialers use it for every new handshake without being rebuilt (roots are added
to the contexts' trust store; a retired root stays trusted until restart — ``ssl`` cannot remove one).
``/config_dump`` shows each identity with its state.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from meshcore.errors import MeshError
from meshcore.hbone.pool import PoolKey
from meshcore.hbone.server import VerifyPeer
from meshcore.identity.certs import WorkloadCertificate, fingerprint
from meshcore.identity.errors import CertificateUnavailable
from meshcore.identity.spiffe import Identity
from meshcore.identity.tls import (
    TlsStream,
    contexts_for,
    load_cert_chain,
    verify_peer_client,
    verify_peer_server,
)

Loader = Callable[[Identity], WorkloadCertificate]


def certificate_state(cert: WorkloadCertificate, wall: float) -> str:
    """Istio's words for a certificate's state in a config dump."""
    if wall < cert.not_before.timestamp():
        return "NotYetValid"
    if wall >= cert.not_after.timestamp():
        return "Expired"
    return "Available"


class CertificateStore:
    def __init__(self, load: Loader | None = None) -> None:
        self._load = load
        self._certs: dict[Identity, WorkloadCertificate] = {}
        self._contexts: dict[Identity, tuple[ssl.SSLContext, ssl.SSLContext]] = {}
        self._errors: dict[Identity, str] = {}

    def ensure(self, identities: Iterable[Identity]) -> dict[Identity, str]:
        """Load what is missing among ``identities``; returns the ones that failed with why."""
        for identity in set(identities) - self._certs.keys():
            if self._load is None:
                self._errors.setdefault(identity, "not fetched yet")
                continue
            try:
                self.install(self._load(identity))
            except MeshError as exc:
                self._errors[identity] = str(exc)
        return {identity: error for identity, error in self._errors.items() if identity not in self._certs}

    def install(self, cert: WorkloadCertificate) -> None:
        existing = self._contexts.get(cert.identity)
        if existing is None:
            self._contexts[cert.identity] = contexts_for(cert)
        else:
            chain, key, roots = cert.chain_pem(), cert.key_pem(), cert.roots_pem().decode()
            for context in existing:
                load_cert_chain(context, chain, key)
                context.load_verify_locations(cadata=roots)
        self._certs[cert.identity] = cert
        self._errors.pop(cert.identity, None)

    def record_error(self, identity: Identity, error: str) -> None:
        """Why ``identity`` has no certificate (shown by readiness and the config dump)."""
        if identity not in self._certs:
            self._errors[identity] = error

    def forget(self, keep: Iterable[Identity]) -> None:
        """Drop errors for identities no longer wanted (certificates stay until restart: cheap, harmless)."""
        wanted = set(keep)
        for identity in list(self._errors):
            if identity not in wanted:
                del self._errors[identity]

    def serial(self, identity: Identity) -> str | None:
        cert = self._certs.get(identity)
        return None if cert is None else cert.serial

    def has(self, identity: Identity) -> bool:
        return identity in self._certs

    def server_context(self, identity: Identity) -> ssl.SSLContext:
        return self._context(identity)[0]

    def client_context(self, identity: Identity) -> ssl.SSLContext:
        return self._context(identity)[1]

    def _context(self, identity: Identity) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        found = self._contexts.get(identity)
        if found is None:
            reason = self._errors.get(identity, "no workload with this identity runs on this node")
            raise CertificateUnavailable(f"no certificate for {identity}", identity=identity, reason=reason)
        return found

    def pool_tls(self, key: PoolKey) -> tuple[ssl.SSLContext, VerifyPeer]:
        """The HBONE pool's TLS for ``key``: our certificate for its source identity, and a check that
        the server proves one of the identities the destination may have."""
        context = self.client_context(Identity.parse(key.source_identity))
        expected = key.destination_identities

        def verify(stream: TlsStream) -> str:
            return verify_peer_server(stream, expected).uri

        return context, verify

    def verify_client(self, identity: Identity) -> VerifyPeer:
        """The inbound check: any client of ``identity``'s trust domain (authorization decides which)."""

        def verify(stream: TlsStream) -> str:
            return verify_peer_client(stream, identity.trust_domain).uri

        return verify

    def dump(self, wall: float | None = None) -> list[dict[str, Any]]:
        wall = time.time() if wall is None else wall
        out: list[dict[str, Any]] = []
        for identity in sorted(self._certs.keys() | self._errors.keys()):
            cert = self._certs.get(identity)
            if cert is None:
                out.append({"identity": str(identity), "state": "Unavailable", "error": self._errors[identity]})
                continue
            out.append({
                "identity": str(identity),
                "state": certificate_state(cert, wall),
                "serial": cert.serial,
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat(),
                "expires_in_s": int(cert.not_after.timestamp() - wall),
                "chain_length": len(cert.chain),
                "roots": [fingerprint(root) for root in cert.roots],
            })
        return out
