"""The certificate manager of a node proxy: one certificate per identity with a local workload.

This is the trio shell around :mod:`meshcore.identity.schedule`: it owns the fetch tasks, the keys and
the certificates, and turns the schedule's decisions into CSRs sent through a
:class:`~meshcore.identity.ca_client.CertificateSigner`. Keys never leave the process: a fresh P-256
key per fetch, only its CSR goes to the CA.

Usage (a ztunnel):

    manager = CertificateManager(CaClient(addr, token=..., roots_pem=...))
    await nursery.start(manager.run)
    manager.workload_added(identity, workload_uid)     # prefetch as workloads appear
    cert = await manager.fetch(identity)               # a connection waits: priority fetch if needed
    manager.workload_removed(identity, workload_uid)   # forgotten with its last workload

The wall clock is injectable so tests can tie it to trio's ``MockClock`` (``EPOCH + trio.current_time()``)
and run hours of refreshes under ``autojump_clock``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshcore.identity.ca_client import CertificateSigner, SignedChain
from meshcore.identity.certs import WorkloadCertificate, identity_of
from meshcore.identity.errors import CertificateUnavailable, InvalidCertificate
from meshcore.identity.schedule import INITIAL_BACKOFF, MAX_BACKOFF, CertState, Schedule
from meshcore.identity.spiffe import Identity
from meshcore.telemetry.logs import get_logger

WallClock = Callable[[], float]

_log = get_logger("identity.manager")


@attrs.frozen
class CertSummary:
    """One line of ``ztunnel-config certificates``: what is held for an identity and in what state."""

    identity: str
    state: str
    serial: str | None = None
    not_before: str | None = None
    not_after: str | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def build_csr(identity: Identity, key: ec.EllipticCurvePrivateKey) -> str:
    """A CSR whose only name is the identity's URI SAN (the subject stays empty, as in the leaf)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class CertificateManager:
    """Keeps certificates for local identities fresh; hands them to connections."""

    def __init__(
        self,
        signer: CertificateSigner,
        *,
        wall_clock: WallClock = time.time,
        requested_ttl: int | None = None,
        concurrency: int = 8,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self._signer = signer
        self._wall = wall_clock
        self._ttl = requested_ttl
        self._schedule = Schedule(
            concurrency=concurrency, initial_backoff=initial_backoff, max_backoff=max_backoff
        )
        self._certs: dict[str, WorkloadCertificate] = {}
        self._outcomes: dict[str, trio.Event] = {}
        self._wakeup = trio.Event()

    # ---- inputs from the proxy's state -------------------------------------------------------

    def workload_added(self, identity: Identity, workload_uid: str) -> None:
        self._schedule.add_holder(identity.uri, workload_uid, self._wall())
        self._kick()

    def workload_removed(self, identity: Identity, workload_uid: str) -> None:
        if self._schedule.remove_holder(identity.uri, workload_uid):
            self._forget(identity.uri)

    def sync(self, workloads: Mapping[str, Identity]) -> None:
        """Make the tracked set match ``{workload uid: identity}`` — the node's current local workloads."""
        wanted = {(uid, ident.uri) for uid, ident in workloads.items()}
        for uri, entry in list(self._schedule.entries.items()):
            for uid in list(entry.holders):
                if (uid, uri) not in wanted:
                    self.workload_removed(Identity.parse(uri), uid)
        for uid, ident in workloads.items():
            self.workload_added(ident, uid)

    # ---- what connections use -----------------------------------------------------------------

    def current(self, identity: Identity) -> WorkloadCertificate | None:
        """The valid certificate held for ``identity`` right now, without waiting."""
        cert = self._certs.get(identity.uri)
        if cert is not None and cert.valid_at(self._wall()):
            return cert
        return None

    async def fetch(self, identity: Identity) -> WorkloadCertificate:
        """A valid certificate, fetching one with priority if none is held. Needs :meth:`run` running.

        Waits for the outcome of one attempt; the caller bounds the wait (its connect timeout).
        """
        cert = self.current(identity)
        if cert is not None:
            return cert
        outcome = self._outcomes.setdefault(identity.uri, trio.Event())
        self._schedule.request(identity.uri, self._wall())
        self._kick()
        await outcome.wait()
        cert = self.current(identity)
        if cert is None:
            entry = self._schedule.entries.get(identity.uri)
            reason = entry.last_error if entry and entry.last_error else "the identity is no longer tracked"
            raise CertificateUnavailable(
                f"no certificate for {identity}", identity=identity.uri, reason=reason
            )
        return cert

    def state(self, identity: Identity) -> CertState | None:
        return self._schedule.state(identity.uri, self._wall())

    def summary(self) -> list[CertSummary]:
        """Every tracked identity with its state and the certificate held (for config dumps)."""
        now = self._wall()
        rows = []
        for uri, entry in sorted(self._schedule.entries.items()):
            state = self._schedule.state(uri, now)
            cert = self._certs.get(uri)
            rows.append(
                CertSummary(
                    identity=uri,
                    state=state.value if state else "Unknown",
                    serial=cert.serial if cert else None,
                    not_before=cert.not_before.isoformat() if cert else None,
                    not_after=cert.not_after.isoformat() if cert else None,
                    error=entry.last_error,
                )
            )
        return rows

    # ---- the driver ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start due fetches, sleep until the next one is due or something changes; forever."""
        async with trio.open_nursery() as fetches:
            task_status.started()
            while True:
                now = self._wall()
                for uri in self._schedule.start_due(now):
                    fetches.start_soon(self._attempt, uri)
                for uri in [u for u in self._certs if u not in self._schedule.entries]:
                    self._forget(uri)
                wake = self._schedule.next_wakeup()
                delay = math.inf if wake is None else max(wake - now, 0.0)
                self._wakeup = trio.Event()
                with trio.move_on_after(delay):
                    await self._wakeup.wait()

    def _kick(self) -> None:
        self._wakeup.set()

    def _forget(self, uri: str) -> None:
        self._certs.pop(uri, None)
        outcome = self._outcomes.pop(uri, None)
        if outcome is not None:
            outcome.set()
        _log.info("identity forgotten", identity=uri)

    async def _attempt(self, uri: str) -> None:
        identity = Identity.parse(uri)
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            signed = await self._signer.sign(identity, build_csr(identity, key), self._ttl)
            cert = _accept(identity, key, signed)
        except Exception as exc:  # an unreachable or misbehaving CA must never take the proxy down
            self._schedule.failed(uri, self._wall(), str(exc))
            entry = self._schedule.entries.get(uri)
            _log.warning(
                "certificate fetch failed",
                identity=uri,
                error=str(exc),
                retry_in=round(entry.next_attempt - self._wall(), 3) if entry else None,
            )
        else:
            if uri in self._schedule.entries:
                self._certs[uri] = cert
                self._schedule.succeeded(
                    uri, self._wall(), cert.not_before.timestamp(), cert.not_after.timestamp()
                )
                _log.info(
                    "certificate obtained",
                    identity=uri,
                    serial=cert.serial,
                    not_after=cert.not_after.isoformat(),
                )
        finally:
            outcome = self._outcomes.pop(uri, None)
            if outcome is not None:
                outcome.set()
            self._kick()


def _accept(identity: Identity, key: ec.EllipticCurvePrivateKey, signed: SignedChain) -> WorkloadCertificate:
    """Check the CA's answer is a certificate for *our* key and *this* identity before using it."""
    if not signed.chain or not signed.roots:
        raise InvalidCertificate(
            "CA answer lacks a leaf or a trust bundle", reason="the CA answer is incomplete"
        )
    leaf = signed.chain[0]
    if leaf.public_key() != key.public_key():
        raise InvalidCertificate("CA signed a different key", reason="the CA answer does not match our CSR")
    presented = identity_of(leaf)
    if presented != identity:
        raise InvalidCertificate(
            f"CA issued {presented}, not {identity}", reason="the CA answer names another identity"
        )
    return WorkloadCertificate(identity=identity, key=key, chain=signed.chain, roots=signed.roots)
