"""With capture, only the tunnel port crosses between pods; without it, plaintext does.

A miniature of the mesh's data path, built from the capture pieces: pod A's app connects to pod B's
app port; A's rules send it to an in-pod 15001 listener; a stand-in ztunnel carries it over a marked
connection to B:15008 (plain TCP here — TLS is not this test's subject); B's side connects to the app
from A's IP with a transparent socket. Witnesses on both pods' interfaces count what crossed.
"""

from __future__ import annotations

import pytest
import trio

from meshcore.net.netns import connect_tcp_from_netns, listen_tcp_in_netns
from meshcore.net.sockopts import PROXY_MARK, original_destination
from tests.netns.helpers import open_pod_netns
from ztunnel.capture.fabric import Fabric, PodNetwork
from ztunnel.capture.rules import install_pod_rules, render_pod_rules
from ztunnel.capture.witness import install_witness, read_witness, remove_witness

pytestmark = pytest.mark.netns


async def relay(a: trio.SocketStream, b: trio.SocketStream) -> None:
    """Copy one message each way (the exchange below is a single request and reply)."""
    await b.send_all(await a.receive_some(1024))
    await a.send_all(await b.receive_some(1024))


async def echo_app(listener: trio.socket.SocketType, peers: list[str]) -> None:
    conn, peer = await listener.accept()
    peers.append(peer[0])
    async with trio.SocketStream(conn) as stream:
        await stream.send_all(b"echo:" + await stream.receive_some(1024))


async def exchange(fd_a: int, server: PodNetwork) -> bytes:
    async with await connect_tcp_from_netns(fd_a, (server.ip, 8080), mark=None) as app:
        await app.send_all(b"hello")
        return await app.receive_some(1024)


async def test_captured_traffic_crosses_only_as_hbone(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    client = await fabric.create_pod("client")
    server = await fabric.create_pod("server")
    for pod in (client, server):
        await install_pod_rules(pod.netns, render_pod_rules())
        await install_witness(pod.netns)
    fd_a = open_pod_netns(netns_fds, client.netns)
    fd_b = open_pod_netns(netns_fds, server.netns)
    peers: list[str] = []

    async def ztunnel_a(outbound: trio.socket.SocketType) -> None:
        conn, _ = await outbound.accept()
        destination = original_destination(conn)
        async with trio.SocketStream(conn) as captured:
            tunnel = await connect_tcp_from_netns(fd_a, (destination[0], 15008), mark=PROXY_MARK)
            async with tunnel:
                await tunnel.send_all(f"{destination[0]}:{destination[1]}\n".encode())
                await relay(captured, tunnel)

    async def ztunnel_b(hbone: trio.socket.SocketType) -> None:
        conn, peer = await hbone.accept()
        async with trio.SocketStream(conn) as tunnel:
            header = await tunnel.receive_some(64)
            host, port = header.decode().strip().split(":")
            app = await connect_tcp_from_netns(fd_b, (host, int(port)), mark=PROXY_MARK, source_ip=peer[0])
            async with app:
                await relay(tunnel, app)

    with (
        await listen_tcp_in_netns(fd_a, "0.0.0.0", 15001) as outbound,
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 15008) as hbone,
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 8080) as app_listener,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ztunnel_a, outbound)
            nursery.start_soon(ztunnel_b, hbone)
            nursery.start_soon(echo_app, app_listener, peers)
            with trio.fail_after(10):
                assert await exchange(fd_a, server) == b"echo:hello"

    assert peers == [client.ip]  # the app saw the real client
    for pod in (client, server):
        counts = await read_witness(pod.netns)
        assert counts.packets("hbone") > 0, pod.name
        assert counts.packets("other_tcp") == 0, (pod.name, counts)


async def test_without_capture_plaintext_is_seen(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    """The control: the same exchange with no rules crosses as app-port TCP, and the witness says so."""
    client = await fabric.create_pod("client")
    server = await fabric.create_pod("server")
    for pod in (client, server):
        await install_witness(pod.netns)
    fd_a = open_pod_netns(netns_fds, client.netns)
    fd_b = open_pod_netns(netns_fds, server.netns)
    peers: list[str] = []
    with await listen_tcp_in_netns(fd_b, "0.0.0.0", 8080) as app_listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_app, app_listener, peers)
            with trio.fail_after(10):
                assert await exchange(fd_a, server) == b"echo:hello"
    for pod in (client, server):
        counts = await read_witness(pod.netns)
        assert counts.packets("other_tcp") > 0
        assert counts.packets("hbone") == 0
        await remove_witness(pod.netns)
        assert (await read_witness(pod.netns)).packets("other_tcp") == 0  # rules and counters gone
