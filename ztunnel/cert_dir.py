"""Workload certificates from files, for a ztunnel running without a control plane (``--cert-dir``).

Layout (one directory per identity, named as the identity's namespace and service account)::

    DIR/root-cert.pem                   trust bundle: every root currently trusted (several during rotation)
    DIR/<namespace>/<sa>/cert-chain.pem leaf first, then intermediates; the leaf's URI SAN must be
                                        spiffe://<trust-domain>/ns/<namespace>/sa/<sa>
    DIR/<namespace>/<sa>/key.pem        the leaf's unencrypted ECDSA key (PKCS#8 or SEC1 PEM)

Only the identities of *local* workloads are read (node authorization: a ztunnel holds certificates
for the workloads on its own node only). A missing or mismatched file is reported per identity so the
process refuses to start with one message that lists everything to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from meshcore.errors import MeshError
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.errors import IdentityError
from meshcore.identity.spiffe import Identity

ROOT_FILE = "root-cert.pem"
CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"


class CertDirError(MeshError):
    response_flag = "UF"
    hint = (
        "lay out {directory} as root-cert.pem plus <namespace>/<service-account>/cert-chain.pem and key.pem "
        "for every identity with a workload on this node"
    )


def identity_dir(directory: Path, identity: Identity) -> Path:
    return directory / identity.namespace / identity.service_account


def load_cert_dir(directory: Path, identities: Iterable[Identity]) -> dict[Identity, WorkloadCertificate]:
    """Load one :class:`WorkloadCertificate` per identity; raise :class:`CertDirError` listing every problem."""
    problems: list[str] = []
    try:
        roots = (directory / ROOT_FILE).read_bytes()
    except OSError as exc:
        raise CertDirError(f"cannot read {directory / ROOT_FILE}: {exc.strerror}", directory=directory) from None
    loaded: dict[Identity, WorkloadCertificate] = {}
    for identity in sorted(set(identities)):
        where = identity_dir(directory, identity)
        try:
            chain = (where / CHAIN_FILE).read_bytes()
            key = (where / KEY_FILE).read_bytes()
        except OSError as exc:
            problems.append(f"{identity}: cannot read {exc.filename}: {exc.strerror}")
            continue
        try:
            cert = WorkloadCertificate.from_pem(chain, key, roots)
        except IdentityError as exc:
            problems.append(f"{identity}: {where}: {exc}")
            continue
        if cert.identity != identity:
            problems.append(f"{identity}: {where / CHAIN_FILE} is a certificate for {cert.identity}")
            continue
        loaded[identity] = cert
    if problems:
        raise CertDirError("certificates missing or invalid: " + "; ".join(problems), directory=directory)
    return loaded
