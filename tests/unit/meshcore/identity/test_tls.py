"""HBONE mTLS over real loopback sockets: what succeeds, and how each failure is reported."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio

from meshcore.identity.certs import WorkloadCertificate, certificates_pem, private_key_pem
from meshcore.identity.errors import (
    ForeignTrustDomain,
    IdentityError,
    NotASpiffeCertificate,
    TlsHandshakeFailed,
    UnexpectedServerIdentity,
    WeakTlsSession,
)
from meshcore.identity.spiffe import Identity
from meshcore.identity.tls import (
    ContextCache,
    client_context,
    closed_after_handshake,
    contexts_for,
    handshake,
    load_cert_chain,
    load_pem_credentials,
    server_context,
    tls_failure,
    verify_peer_client,
    verify_peer_server,
)
from tests.unit.meshcore.identity.pki import CLIENT, SERVER, issue, make_ca, past_clock


@attrs.define
class Outcome:
    server: Identity | BaseException | None = None
    client: Identity | BaseException | None = None
    client_received: bytes = b""


async def run_pair(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    *,
    expected: Sequence[str] = (SERVER,),
    trust_domain: str = "cluster.local",
) -> Outcome:
    """One HBONE-style handshake on 127.0.0.1; the server greets only after its identity check."""
    outcome = Outcome()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def server() -> None:
        tcp = await listeners[0].accept()
        tls = trio.SSLStream(tcp, server_ctx, server_side=True, https_compatible=True)
        try:
            await handshake(tls)
            outcome.server = verify_peer_client(tls, trust_domain)
            await tls.send_all(b"hello")
        except IdentityError as exc:
            outcome.server = exc
        finally:
            await trio.aclose_forcefully(tls)
            await listeners[0].aclose()

    async def client() -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, client_ctx, server_hostname=None, https_compatible=True)
        try:
            await handshake(tls)
            outcome.client = verify_peer_server(tls, expected)
            try:
                outcome.client_received = bytes(await tls.receive_some(100))
            except trio.BrokenResourceError as exc:  # TLS 1.3: a rejected client cert shows up here
                outcome.client = tls_failure(exc, peer="server")
            else:
                if not outcome.client_received:
                    outcome.client = closed_after_handshake("server")
        except IdentityError as exc:
            outcome.client = exc
        finally:
            await trio.aclose_forcefully(tls)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            nursery.start_soon(client)
    return outcome


def contexts(
    server: WorkloadCertificate, client: WorkloadCertificate
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return contexts_for(server)[0], contexts_for(client)[1]


async def test_valid_certificates_handshake(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    out = await run_pair(*contexts(issue(ca, SERVER), issue(ca, CLIENT)))
    assert out.server == Identity.parse(CLIENT)
    assert out.client == Identity.parse(SERVER)
    assert out.client_received == b"hello"


async def test_client_from_another_ca_is_rejected(tmp_path: Path) -> None:
    mesh, other = make_ca(tmp_path / "mesh"), make_ca(tmp_path / "other")
    intruder = issue(other, CLIENT)  # trusts the mesh root, but its leaf comes from another CA
    client_ctx = client_context(intruder.chain_pem(), intruder.key_pem(), mesh.trust_bundle_pem())
    out = await run_pair(contexts_for(issue(mesh, SERVER))[0], client_ctx)
    assert isinstance(out.server, TlsHandshakeFailed)
    assert "unable to get local issuer certificate" in str(out.server)
    assert isinstance(out.client, TlsHandshakeFailed)  # surfaced on the client's first read
    assert "rejected our TLS version or our certificate" in str(out.client)
    assert out.client_received == b""


async def test_server_from_another_ca_is_rejected_by_client(tmp_path: Path) -> None:
    mesh, other = make_ca(tmp_path / "mesh"), make_ca(tmp_path / "other")
    out = await run_pair(*contexts(issue(other, SERVER), issue(mesh, CLIENT)))
    assert isinstance(out.client, TlsHandshakeFailed)
    assert "certificate verification failed" in str(out.client)


async def test_client_of_another_trust_domain_is_rejected_after_handshake(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, trust_domain="example.org")
    foreign = "spiffe://example.org/ns/prod/sa/client"
    server_cert = issue(ca, "spiffe://example.org/ns/prod/sa/server")
    out = await run_pair(
        *contexts(server_cert, issue(ca, foreign)),
        expected=["spiffe://example.org/ns/prod/sa/server"],
        trust_domain="cluster.local",
    )
    assert isinstance(out.server, ForeignTrustDomain)
    assert foreign in str(out.server) and "'cluster.local'" in str(out.server)
    assert out.client_received == b""  # no application byte after a failed identity check


async def test_expired_client_certificate_is_rejected(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "now")
    stale_ca = make_ca(tmp_path / "stale", clock=past_clock(3))
    expired = issue(stale_ca, CLIENT, ttl=3600)
    # Same mesh: the stale CA's root is trusted by both, only the leaf's validity is wrong.
    bundle = ca.trust_bundle_pem() + stale_ca.trust_bundle_pem()
    server = issue(ca, SERVER)
    server_ctx = server_context(server.chain_pem(), server.key_pem(), bundle)
    client_ctx = client_context(expired.chain_pem(), expired.key_pem(), bundle)
    out = await run_pair(server_ctx, client_ctx)
    assert isinstance(out.server, TlsHandshakeFailed)
    assert "certificate has expired" in str(out.server)
    assert isinstance(out.client, TlsHandshakeFailed)


async def test_expired_server_certificate_is_rejected_by_client(tmp_path: Path) -> None:
    stale_ca = make_ca(tmp_path, clock=past_clock(3))
    ca = make_ca(tmp_path)  # same state dir: same root, current clock
    out = await run_pair(*contexts(issue(stale_ca, SERVER), issue(ca, CLIENT)))
    assert isinstance(out.client, TlsHandshakeFailed)
    assert "certificate has expired" in str(out.client)


async def test_server_san_not_expected(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    other = "spiffe://cluster.local/ns/prod/sa/other"
    out = await run_pair(*contexts(issue(ca, SERVER), issue(ca, CLIENT)), expected=[other])
    assert isinstance(out.client, UnexpectedServerIdentity)
    message = str(out.client)
    assert SERVER in message and other in message


def _tls12_only(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _tls12_client(cert: WorkloadCertificate) -> ssl.SSLContext:
    ctx = _tls12_only(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=cert.roots_pem().decode())
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def test_tls12_only_client_is_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server, client = issue(ca, SERVER), issue(ca, CLIENT)
    out = await run_pair(contexts_for(server)[0], _tls12_client(client))
    assert isinstance(out.server, TlsHandshakeFailed)
    assert "does not speak TLS 1.3" in str(out.server)
    assert isinstance(out.client, TlsHandshakeFailed)


async def test_tls12_only_server_is_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server, client = issue(ca, SERVER), issue(ca, CLIENT)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _tls12_only(ctx)
    load_cert_chain(ctx, server.chain_pem(), server.key_pem())
    out = await run_pair(ctx, contexts_for(client)[1])
    assert isinstance(out.client, TlsHandshakeFailed)
    assert "TLS 1.3" in str(out.client)


async def test_client_without_certificate_is_rejected(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = issue(ca, SERVER)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=server.roots_pem().decode())
    ctx.set_alpn_protocols(["h2"])
    out = await run_pair(contexts_for(server)[0], ctx)
    assert isinstance(out.server, TlsHandshakeFailed)
    assert "the client presented no certificate" in str(out.server)
    assert isinstance(out.client, TlsHandshakeFailed)
    assert out.client_received == b""


async def test_session_is_tls13_aes_gcm_h2(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server, client = issue(ca, SERVER), issue(ca, CLIENT)
    seen: list[tuple[str | None, str | None, str | None]] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve() -> None:
        tls = trio.SSLStream(await listeners[0].accept(), contexts_for(server)[0], server_side=True)
        await handshake(tls)
        cipher = tls.cipher()
        seen.append((tls.version(), cipher[0] if cipher else None, tls.selected_alpn_protocol()))
        await trio.aclose_forcefully(tls)
        await listeners[0].aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        tls = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), contexts_for(client)[1])
        await handshake(tls)
        await trio.aclose_forcefully(tls)
    version, cipher, alpn = seen[0]
    assert version == "TLSv1.3" and alpn == "h2"
    assert cipher in {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"}


async def test_root_rotation_overlap_keeps_old_and_new_leaves_talking(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    old_root = ca.active_root_fingerprint
    old_leaf = issue(ca, SERVER)  # bundle: old root only
    new_root = ca.add_root()  # stage: trusted everywhere before anything is signed with it
    staged = issue(ca, CLIENT)  # still signed by the old root, bundle now holds both roots
    assert ca.active_root_fingerprint == old_root and len(staged.roots) == 2
    ca.activate_root(new_root)
    new_leaf = issue(ca, CLIENT)  # signed by the new root
    assert ca.active_root_fingerprint == new_root

    # During the overlap a proxy that refreshed (new leaf, both roots) talks to one that has not
    # refreshed its leaf yet but already holds both roots — in both directions.
    both = ca.trust_bundle_pem()
    old_server = server_context(old_leaf.chain_pem(), old_leaf.key_pem(), both)
    new_client = client_context(new_leaf.chain_pem(), new_leaf.key_pem(), both)
    out = await run_pair(old_server, new_client)
    assert out.client_received == b"hello" and out.server == Identity.parse(CLIENT)

    new_server_leaf = issue(ca, SERVER)
    old_client = client_context(staged.chain_pem(), staged.key_pem(), both)
    out = await run_pair(
        server_context(new_server_leaf.chain_pem(), new_server_leaf.key_pem(), both), old_client
    )
    assert out.client_received == b"hello"

    # After retirement, a leaf from the old root is no longer accepted.
    ca.retire_root(old_root)
    only_new = ca.trust_bundle_pem()
    out = await run_pair(
        server_context(new_server_leaf.chain_pem(), new_server_leaf.key_pem(), only_new),
        client_context(staged.chain_pem(), staged.key_pem(), staged.roots_pem()),
    )
    assert isinstance(out.server, TlsHandshakeFailed)


def test_load_pem_credentials_checks_key_matches(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    a, b = issue(ca, SERVER), issue(ca, CLIENT)
    loaded = load_pem_credentials(a.chain_pem(), a.key_pem(), a.roots_pem())
    assert loaded.identity == Identity.parse(SERVER) and loaded.serial == a.serial
    with pytest.raises(IdentityError, match="key does not match"):
        load_pem_credentials(a.chain_pem(), b.key_pem(), a.roots_pem())


async def test_client_without_alpn_h2_is_refused_after_handshake(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server, client = issue(ca, SERVER), issue(ca, CLIENT)
    ctx = client_context(client.chain_pem(), client.key_pem(), client.roots_pem())
    ctx.set_alpn_protocols(["http/1.1"])
    out = await run_pair(contexts_for(server)[0], ctx)
    assert isinstance(out.server, WeakTlsSession)
    assert "alpn=None" in str(out.server) and "alpn=h2" in str(out.server)
    assert out.client_received == b""


async def test_certificate_without_spiffe_san_is_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = issue(ca, SERVER)
    serving, key = ca.issue_serving(["istiod.istio-system.svc"])  # chains to the mesh root, but no SPIFFE ID
    ctx = client_context(certificates_pem(serving.chain), private_key_pem(key), ca.trust_bundle_pem())
    out = await run_pair(contexts_for(server)[0], ctx)
    assert isinstance(out.server, NotASpiffeCertificate)
    assert "exactly one spiffe:// URI SAN" in str(out.server)


def test_context_cache_reuses_until_the_leaf_or_bundle_changes(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cache = ContextCache(max_entries=2)
    first = issue(ca, SERVER)
    assert cache.server(first) is cache.server(first)
    assert cache.client(first) is cache.client(first)
    refreshed = issue(ca, SERVER)
    assert cache.server(refreshed) is not cache.server(first)
    ca.add_root()
    rebundled = WorkloadCertificate(identity=first.identity, key=first.key, chain=first.chain, roots=ca.roots)
    cache.server(rebundled)
    assert len(cache) == 2  # the oldest entry made room
