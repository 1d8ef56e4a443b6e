"""istiod_lite's control-plane endpoint on 127.0.0.1 with the proxies' CA client over real TLS + WebSocket."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.csr_service import CsrService, StaticPlacement
from istiod_lite.tokens import Caller, NodeTokenAuthenticator, NodeTokens
from meshcore.identity.ca_client import CaClient, control_plane_context
from meshcore.identity.certs import identity_of
from meshcore.identity.errors import CertificateRequestFailed, CertificateRequestRefused
from meshcore.identity.manager import CertificateManager, build_csr
from meshcore.identity.spiffe import Identity
from meshcore.identity.tls import contexts_for, handshake, verify_peer_client, verify_peer_server

CLIENT = Identity.parse("spiffe://cluster.local/ns/prod/sa/client")
SERVER = Identity.parse("spiffe://cluster.local/ns/prod/sa/server")


@attrs.define
class ControlPlane:
    address: tuple[str, int]
    ca: CertificateAuthority
    tokens: NodeTokens
    placement: StaticPlacement

    def client(self, node: str) -> CaClient:
        return CaClient(self.address, token=self.tokens.issue(node), roots_pem=self.ca.trust_bundle_pem())


async def echo_caller(ws: trio_websocket.WebSocketConnection, caller: Caller) -> None:
    """A second endpoint, standing in for the push server's /v1/xds: the table routes by path."""
    await ws.send_message(f"hello {caller.node}")


@pytest.fixture
async def control_plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    ca = CertificateAuthority.load_or_create(tmp_path)
    tokens = NodeTokens(tmp_path)
    placement = StaticPlacement([(CLIENT.uri, "node-a"), (SERVER.uri, "node-b")])
    server = ControlServer(
        ssl_context=serving_context(ca),
        authenticator=NodeTokenAuthenticator(tokens),
        handlers={"/v1/ca": CsrService(ca, placement), "/v1/echo": echo_caller},
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.run)
        yield ControlPlane(address=address, ca=ca, tokens=tokens, placement=placement)
        nursery.cancel_scope.cancel()


def _csr() -> str:
    return build_csr(CLIENT, ec.generate_private_key(ec.SECP256R1()))


async def test_node_obtains_a_certificate_for_its_workload(control_plane: ControlPlane) -> None:
    signed = await control_plane.client("node-a").sign(CLIENT, _csr(), 3600)
    assert identity_of(signed.chain[0]) == CLIENT
    assert signed.roots == control_plane.ca.roots


async def test_node_authorization_refusal_names_identity_and_node(control_plane: ControlPlane) -> None:
    with pytest.raises(CertificateRequestRefused) as info:
        await control_plane.client("node-b").sign(CLIENT, _csr(), None)
    assert f"identity {CLIENT.uri} has no workload on node 'node-b'" in str(info.value)


async def test_csr_san_must_equal_requested_identity(control_plane: ControlPlane) -> None:
    other = Identity.parse("spiffe://cluster.local/ns/prod/sa/admin")
    with pytest.raises(CertificateRequestRefused, match="IdentityMismatch"):
        await control_plane.client("node-a").sign(other, _csr(), None)


async def test_unknown_token_is_refused_with_401(control_plane: ControlPlane) -> None:
    client = CaClient(control_plane.address, token="forged", roots_pem=control_plane.ca.trust_bundle_pem())
    with pytest.raises(CertificateRequestFailed) as info:
        await client.sign(CLIENT, _csr(), None)
    assert "HTTP 401" in str(info.value) and "unknown bearer token" in str(info.value)


async def test_client_trusting_another_root_refuses_the_server(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.load_or_create(tmp_path / "other")
    client = CaClient(
        control_plane.address,
        token=control_plane.tokens.issue("node-a"),
        roots_pem=stranger.trust_bundle_pem(),
    )
    with pytest.raises(CertificateRequestFailed, match="TLS verification of istiod_lite failed"):
        await client.sign(CLIENT, _csr(), None)


async def test_unreachable_control_plane_is_reported(tmp_path: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there any more
    ca = CertificateAuthority.load_or_create(tmp_path)
    client = CaClient(("127.0.0.1", port), token="t", roots_pem=ca.trust_bundle_pem(), timeout=5)
    with pytest.raises(CertificateRequestFailed, match="cannot connect") as info:
        await client.sign(CLIENT, _csr(), None)
    assert f"127.0.0.1:{port}" in str(info.value)


async def _open(control_plane: ControlPlane, path: str, token: str) -> str | bytes:
    """A raw WebSocket round trip on ``path``, the way any control-plane client connects."""
    ctx = control_plane_context(control_plane.ca.trust_bundle_pem())
    tcp = await trio.open_tcp_stream(*control_plane.address)
    tls = trio.SSLStream(tcp, ctx, server_hostname="istiod.istio-system.svc", https_compatible=True)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                tls,
                "istiod.istio-system.svc",
                path,
                extra_headers=[(b"authorization", f"Bearer {token}".encode())],
            )
            message = await ws.get_message()
            await ws.aclose()
            nursery.cancel_scope.cancel()
        return message
    finally:
        await trio.aclose_forcefully(tls)


async def test_routes_by_path_and_rejects_unknown_paths(control_plane: ControlPlane) -> None:
    token = control_plane.tokens.issue("node-a")
    assert await _open(control_plane, "/v1/echo", token) == "hello node-a"
    with pytest.RaisesGroup(
        pytest.RaisesExc(trio_websocket.ConnectionRejected, check=lambda e: e.status_code == 404)
    ):
        await _open(control_plane, "/v1/unknown", token)


async def test_server_survives_garbage_connections(control_plane: ControlPlane) -> None:
    for payload in (b"", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
        tcp = await trio.open_tcp_stream(*control_plane.address)
        if payload:
            await tcp.send_all(payload)
        await tcp.aclose()
    plain = ssl.create_default_context()
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    tls = trio.SSLStream(await trio.open_tcp_stream(*control_plane.address), plain, server_hostname="x")
    await tls.do_handshake()
    await tls.send_all(b"not a websocket request\r\n\r\n")
    await trio.aclose_forcefully(tls)
    signed = await control_plane.client("node-a").sign(CLIENT, _csr(), None)
    assert identity_of(signed.chain[0]) == CLIENT


async def test_managers_on_two_nodes_get_certs_that_handshake(control_plane: ControlPlane) -> None:
    """The whole loop: each node's manager fetches over the control plane, then HBONE mTLS succeeds."""
    node_a = CertificateManager(control_plane.client("node-a"))
    node_b = CertificateManager(control_plane.client("node-b"))
    async with trio.open_nursery() as nursery:
        await nursery.start(node_a.run)
        await nursery.start(node_b.run)
        node_a.workload_added(CLIENT, "client-pod")
        node_b.workload_added(SERVER, "server-pod")
        with trio.fail_after(10):
            client_cert = await node_a.fetch(CLIENT)
            server_cert = await node_b.fetch(SERVER)
        assert [row.state for row in node_a.summary()] == ["Available"]

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        seen: list[Identity] = []

        async def serve() -> None:
            tls = trio.SSLStream(await listeners[0].accept(), contexts_for(server_cert)[0], server_side=True)
            await handshake(tls)
            seen.append(verify_peer_client(tls, "cluster.local"))
            await tls.send_all(b"ok")
            await trio.aclose_forcefully(tls)
            await listeners[0].aclose()

        nursery.start_soon(serve)
        tls = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), contexts_for(client_cert)[1])
        with trio.fail_after(10):
            await handshake(tls)
            assert verify_peer_server(tls, [SERVER.uri]) == SERVER
            assert await tls.receive_some(10) == b"ok"
        await trio.aclose_forcefully(tls)
        assert seen == [CLIENT]

        # node-a may not mint node-b's identity, even through its manager.
        with pytest.raises(Exception, match="has no workload on node 'node-a'"):
            await node_a.fetch(SERVER)
        nursery.cancel_scope.cancel()
