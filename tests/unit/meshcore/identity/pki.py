"""Test PKI built with the real istiod_lite CA: mesh CAs, foreign CAs, workload credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority, Clock
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.spiffe import Identity

CLIENT = "spiffe://cluster.local/ns/prod/sa/client"
SERVER = "spiffe://cluster.local/ns/prod/sa/server"


def make_ca(
    directory: Path, *, trust_domain: str = "cluster.local", clock: Clock | None = None
) -> CertificateAuthority:
    if clock is None:
        return CertificateAuthority.load_or_create(directory, trust_domain=trust_domain)
    return CertificateAuthority.load_or_create(directory, trust_domain=trust_domain, clock=clock)


def issue(ca: CertificateAuthority, identity: str, *, ttl: float | None = 3600) -> WorkloadCertificate:
    """A workload credential signed by ``ca`` (fresh key, trust bundle = the CA's current roots)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_workload(key.public_key(), Identity.parse(identity), ttl)
    return WorkloadCertificate(
        identity=Identity.parse(identity), key=key, chain=issued.chain, roots=issued.roots
    )


def past_clock(days: int) -> Clock:
    """A CA clock stuck ``days`` ago, to mint certificates that are already expired."""
    then = datetime.now(UTC) - timedelta(days=days)
    return lambda: then
