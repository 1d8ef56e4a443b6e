"""The certificate manager under trio's autojump clock: hours of refreshes and outages, run instantly.

The CA is the real istiod_lite CA, in process; its clock and the manager's wall clock are both
``EPOCH + trio.current_time()``, so certificate validity and trio's timers agree.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from meshcore.identity.ca_client import SignedChain
from meshcore.identity.errors import CertificateRequestFailed, CertificateUnavailable
from meshcore.identity.manager import CertificateManager
from meshcore.identity.schedule import CertState, refresh_at
from meshcore.identity.spiffe import Identity

EPOCH = 1_800_000_000.0
A = Identity.parse("spiffe://cluster.local/ns/prod/sa/a")
B = Identity.parse("spiffe://cluster.local/ns/prod/sa/b")
C = Identity.parse("spiffe://cluster.local/ns/prod/sa/c")
D = Identity.parse("spiffe://cluster.local/ns/prod/sa/d")


def wall() -> float:
    return EPOCH + trio.current_time()


class InProcessCa:
    """A :class:`CertificateSigner` over the real CA that can be 'unreachable' and records its calls."""

    def __init__(self, ca: CertificateAuthority, *, latency: float = 0.0) -> None:
        self.ca = ca
        self.reachable = True
        self.latency = latency
        self.calls: list[tuple[float, str]] = []

    async def sign(self, identity: Identity, csr_pem: str, ttl_seconds: int | None) -> SignedChain:
        self.calls.append((trio.current_time(), identity.uri))
        await trio.sleep(self.latency)
        if not self.reachable:
            raise CertificateRequestFailed(
                "connect refused", identity=identity.uri, ca="test", reason="refused"
            )
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        issued = self.ca.issue_workload(key, identity, ttl_seconds)
        return SignedChain(chain=issued.chain, roots=issued.roots)

    def times(self, identity: Identity) -> list[float]:
        return [t for t, uri in self.calls if uri == identity.uri]


@pytest.fixture
async def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path, clock=lambda: datetime.fromtimestamp(wall(), UTC))


@pytest.fixture
async def running(ca: CertificateAuthority) -> AsyncIterator[tuple[CertificateManager, InProcessCa]]:
    signer = InProcessCa(ca)
    manager = CertificateManager(signer, wall_clock=wall, requested_ttl=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield manager, signer
        nursery.cancel_scope.cancel()


async def test_prefetch_then_refresh_at_half_life(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, signer = running
    assert manager.state(A) is None
    manager.workload_added(A, "pod-1")
    assert manager.state(A) is CertState.INITIALIZING
    await trio.sleep(1)
    first = manager.current(A)
    assert first is not None and manager.state(A) is CertState.AVAILABLE
    assert signer.times(A) == [0.0]
    half_life = refresh_at(first.not_before.timestamp(), first.not_after.timestamp()) - EPOCH
    await trio.sleep_until(half_life - 1)
    assert len(signer.times(A)) == 1
    await trio.sleep_until(half_life + 1)
    assert signer.times(A)[1] == pytest.approx(half_life, abs=1e-3)
    second = manager.current(A)
    assert second is not None and second.serial != first.serial
    assert second.not_after > first.not_after


async def test_ca_unreachable_backoff_old_cert_until_expiry(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, signer = running
    manager.workload_added(A, "pod-1")
    await trio.sleep(1)
    cert = manager.current(A)
    assert cert is not None
    half_life = refresh_at(cert.not_before.timestamp(), cert.not_after.timestamp()) - EPOCH
    expiry = cert.not_after.timestamp() - EPOCH
    signer.reachable = False

    await trio.sleep_until(expiry - 1)
    assert manager.current(A) == cert  # the old certificate is still handed out
    assert manager.state(A) is CertState.AVAILABLE
    assert (await manager.fetch(A)).serial == cert.serial

    retries = signer.times(A)[1:]
    assert retries[0] == pytest.approx(half_life, abs=1e-3)
    deltas = [round(b - a, 3) for a, b in itertools.pairwise(retries)]
    assert deltas[:11] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 150.0, 150.0]
    assert set(deltas[9:]) == {150.0}

    await trio.sleep_until(expiry + 0.01)
    assert manager.current(A) is None
    assert manager.state(A) is CertState.UNAVAILABLE
    summary = manager.summary()[0]
    assert summary.state == "Unavailable" and "refused" in summary.error and summary.serial == cert.serial
    with pytest.raises(CertificateUnavailable, match="refused"):
        await manager.fetch(A)

    signer.reachable = True  # the CA comes back: the next retry (at most 150 s away) recovers
    await trio.sleep(151)
    assert manager.state(A) is CertState.AVAILABLE


async def test_first_fetch_failing_is_unavailable_then_recovers(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, signer = running
    signer.reachable = False
    manager.workload_added(A, "pod-1")
    await trio.sleep(0.1)
    assert manager.state(A) is CertState.UNAVAILABLE
    signer.reachable = True
    await trio.sleep(1)
    assert manager.state(A) is CertState.AVAILABLE
    assert signer.times(A) == [0.0, 0.5]


async def test_fetch_waits_with_priority(
    autojump_clock: trio.testing.MockClock, ca: CertificateAuthority
) -> None:
    signer = InProcessCa(ca, latency=1.0)
    manager = CertificateManager(signer, wall_clock=wall, concurrency=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        for ident in (A, B, C):
            manager.workload_added(ident, f"pod-{ident.service_account}")
        await trio.sleep(0.1)  # A's prefetch is in flight, B and C wait for the only slot
        cert = await manager.fetch(D)  # a connection needs D: it goes before B and C
        assert cert.identity == D
        assert [uri for _, uri in signer.calls] == [A.uri, D.uri]
        await trio.sleep(5)
        assert [uri for _, uri in signer.calls] == [A.uri, D.uri, B.uri, C.uri]
        assert (await manager.fetch(B)).identity == B  # already held: no new request
        assert len(signer.calls) == 4
        nursery.cancel_scope.cancel()


async def test_fetch_during_initializing_waits_for_the_prefetch(
    autojump_clock: trio.testing.MockClock, ca: CertificateAuthority
) -> None:
    signer = InProcessCa(ca, latency=2.0)
    manager = CertificateManager(signer, wall_clock=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        manager.workload_added(A, "pod-1")
        await trio.sleep(0.5)
        cert = await manager.fetch(A)
        assert trio.current_time() == pytest.approx(2.0)
        assert cert.identity == A and len(signer.calls) == 1
        nursery.cancel_scope.cancel()


async def test_identity_forgotten_with_its_last_workload(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, signer = running
    manager.workload_added(A, "pod-1")
    manager.workload_added(A, "pod-2")
    manager.workload_added(B, "pod-3")
    await trio.sleep(1)
    manager.workload_removed(A, "pod-1")
    assert manager.current(A) is not None
    manager.workload_removed(A, "pod-2")
    assert manager.current(A) is None and manager.state(A) is None
    assert [row.identity for row in manager.summary()] == [B.uri]
    await trio.sleep(3 * 3600)  # B keeps refreshing, A is never asked for again
    assert len(signer.times(A)) == 1 and len(signer.times(B)) > 1


async def test_sync_tracks_the_local_workload_set(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, _ = running
    manager.sync({"pod-1": A, "pod-2": B})
    await trio.sleep(1)
    assert {row.identity for row in manager.summary()} == {A.uri, B.uri}
    manager.sync({"pod-2": B, "pod-3": C})
    await trio.sleep(1)
    assert {row.identity for row in manager.summary()} == {B.uri, C.uri}


async def test_summary_rows(
    autojump_clock: trio.testing.MockClock, running: tuple[CertificateManager, InProcessCa]
) -> None:
    manager, _ = running
    manager.workload_added(A, "pod-1")
    await trio.sleep(1)
    cert = manager.current(A)
    assert cert is not None
    row = manager.summary()[0].to_json()
    assert row == {
        "identity": A.uri,
        "state": "Available",
        "serial": cert.serial,
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "error": "",
    }
