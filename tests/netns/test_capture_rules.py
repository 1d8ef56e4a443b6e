"""The in-pod rules capture real traffic between two pod namespaces on the fabric.

A "ztunnel" here is the test process itself: it opens its listeners inside the pods' namespaces with
the setns helper, exactly as the real one will, and checks where connections land.
"""

from __future__ import annotations

import shutil
import socket

import pytest
import trio

from meshcore.net.netns import connect_tcp_from_netns, listen_tcp_in_netns, socket_in_netns
from meshcore.net.sockopts import PROXY_MARK, original_destination, set_mark
from tests.netns.helpers import open_pod_netns
from ztunnel.capture.fabric import Fabric
from ztunnel.capture.rules import install_pod_rules, render_pod_rules, rules_present

pytestmark = pytest.mark.netns

RULES = render_pod_rules()


async def receive_until(stream: trio.SocketStream, marker: bytes, limit: int = 65536) -> bytes:
    """Read until ``marker`` has arrived (bounded), for the tiny HTTP exchanges below."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


async def connect_from(netns_fd: int, host: str, port: int, *, mark: int | None = None) -> trio.SocketStream:
    """A TCP connection made from inside a pod namespace (unmarked like an app's, or with ztunnel's mark)."""
    return await connect_tcp_from_netns(netns_fd, (host, port), mark=mark)


async def test_outbound_connect_lands_on_15001_with_original_destination(
    fabric: Fabric, netns_fds: dict[str, int]
) -> None:
    pod_a = await fabric.create_pod("client")
    pod_b = await fabric.create_pod("server")
    await install_pod_rules(pod_a.netns, RULES)
    fd_a = open_pod_netns(netns_fds, pod_a.netns)

    with await listen_tcp_in_netns(fd_a, "0.0.0.0", 15001) as listener:
        async with await connect_from(fd_a, pod_b.ip, 8080) as client:
            accepted, peer = await listener.accept()
            with accepted:
                assert original_destination(accepted) == (pod_b.ip, 8080)
                assert peer[0] == pod_a.ip
                await client.send_all(b"ping")
                assert await accepted.recv(4) == b"ping"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (make test installs it)")
async def test_unmodified_curl_in_pod_is_captured(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pod_a = await fabric.create_pod("curl")
    pod_b = await fabric.create_pod("web")
    await install_pod_rules(pod_a.netns, RULES)
    fd_a = open_pod_netns(netns_fds, pod_a.netns)
    seen: list[tuple[str, int]] = []

    async def fake_ztunnel(listener: trio.socket.SocketType) -> None:
        accepted, _ = await listener.accept()
        async with trio.SocketStream(accepted) as stream:
            await receive_until(stream, b"\r\n\r\n")
            host, port = original_destination(accepted)
            seen.append((host, port))
            body = f"captured {host}:{port}".encode()
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            await stream.send_all(head + body)

    with await listen_tcp_in_netns(fd_a, "0.0.0.0", 15001) as listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_ztunnel, listener)
            curl = await trio.run_process(
                [
                    "ip",
                    "netns",
                    "exec",
                    pod_a.netns,
                    "curl",
                    "-sS",
                    "--noproxy",
                    "*",
                    "--max-time",
                    "10",
                    f"http://{pod_b.ip}:8080/",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout.decode() == f"captured {pod_b.ip}:8080"
    assert seen == [(pod_b.ip, 8080)]


async def test_inbound_plaintext_lands_on_15006_and_hbone_port_is_not_redirected(
    fabric: Fabric, netns_fds: dict[str, int]
) -> None:
    pod_a = await fabric.create_pod("caller")
    pod_b = await fabric.create_pod("callee")
    await install_pod_rules(pod_b.netns, RULES)
    fd_a = open_pod_netns(netns_fds, pod_a.netns)
    fd_b = open_pod_netns(netns_fds, pod_b.netns)

    with (
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 15006) as inbound,
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 15008) as hbone,
    ):
        async with await connect_from(fd_a, pod_b.ip, 8080) as _plain:
            accepted, peer = await inbound.accept()
            with accepted:
                assert original_destination(accepted) == (pod_b.ip, 8080)
                assert accepted.getsockname() == (pod_b.ip, 15006)
                assert peer[0] == pod_a.ip

        async with await connect_from(fd_a, pod_b.ip, 15008) as _tunnel:
            accepted, peer = await hbone.accept()
            with accepted:
                assert accepted.getsockname() == (pod_b.ip, 15008)
                assert peer[0] == pod_a.ip
        with pytest.raises(BlockingIOError):
            _nonblocking_accept(inbound)  # the 15008 connection never reached 15006


def _nonblocking_accept(listener: trio.socket.SocketType) -> None:
    """Nothing else reached 15006: a plain non-blocking accept on a dup of the listener has no connection."""
    dup = socket.socket(fileno=socket.dup(listener.fileno()))
    try:
        dup.setblocking(False)
        conn, _ = dup.accept()
        conn.close()
    finally:
        dup.close()


async def test_proxy_marked_connections_bypass_outbound_capture(
    fabric: Fabric, netns_fds: dict[str, int]
) -> None:
    pod_a = await fabric.create_pod("src")
    pod_b = await fabric.create_pod("dst")
    await install_pod_rules(pod_a.netns, RULES)
    await install_pod_rules(pod_b.netns, RULES)
    fd_a = open_pod_netns(netns_fds, pod_a.netns)
    fd_b = open_pod_netns(netns_fds, pod_b.netns)

    with (
        await listen_tcp_in_netns(fd_a, "0.0.0.0", 15001) as outbound_a,
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 15008) as hbone_b,
    ):
        async with await connect_from(fd_a, pod_b.ip, 15008, mark=PROXY_MARK) as tunnel:
            accepted, peer = await hbone_b.accept()
            with accepted:
                assert peer[0] == pod_a.ip
                await tunnel.send_all(b"hbone")
                assert await accepted.recv(5) == b"hbone"
        with pytest.raises(BlockingIOError):
            _nonblocking_accept(outbound_a)


async def test_transparent_return_path_shows_the_app_its_real_peer(
    fabric: Fabric, netns_fds: dict[str, int]
) -> None:
    """ztunnel's inbound leg: 15006 → a socket bound to the *client's* IP → the app, and back."""
    pod_a = await fabric.create_pod("peer")
    pod_b = await fabric.create_pod("app")
    await install_pod_rules(pod_b.netns, RULES)
    fd_a = open_pod_netns(netns_fds, pod_a.netns)
    fd_b = open_pod_netns(netns_fds, pod_b.netns)

    with (
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 15006) as inbound,
        await listen_tcp_in_netns(fd_b, "0.0.0.0", 8080) as app,
    ):
        async with await connect_from(fd_a, pod_b.ip, 8080) as client:
            captured, client_addr = await inbound.accept()
            with captured:
                upstream = await connect_tcp_from_netns(
                    fd_b, original_destination(captured), mark=PROXY_MARK, source_ip=client_addr[0]
                )
                async with upstream:
                    app_conn, app_peer = await app.accept()
                    with app_conn:
                        assert app_peer[0] == pod_a.ip  # the app sees the real client, not ztunnel
                        await app_conn.send(b"pong")
                        assert await upstream.receive_some(4) == b"pong"  # the reply found its way back
                        await client.send_all(b"x")
                        assert await captured.recv(1) == b"x"


async def test_install_is_idempotent_and_rules_are_removable(fabric: Fabric) -> None:
    from ztunnel.capture.rules import remove_pod_rules

    pod = await fabric.create_pod("twice")
    await install_pod_rules(pod.netns, RULES)
    await install_pod_rules(pod.netns, RULES)
    saved = (
        await trio.run_process(["ip", "netns", "exec", pod.netns, "iptables-save"], capture_stdout=True)
    ).stdout
    assert saved.decode().count("-j REDIRECT --to-ports 15001") == 1
    await remove_pod_rules(pod.netns, RULES)
    assert not await rules_present(pod.netns)
    ip_rules = (await trio.run_process(["ip", "-n", pod.netns, "rule"], capture_stdout=True)).stdout.decode()
    assert "0x111" not in ip_rules


async def test_dns_from_the_pod_goes_to_15053_unless_marked(
    fabric: Fabric, netns_fds: dict[str, int]
) -> None:
    """An app's query to any nameserver reaches the in-pod 15053; ztunnel's own (marked) query leaves."""
    pod = await fabric.create_pod("resolver")
    await install_pod_rules(pod.netns, RULES)
    fd_pod = open_pod_netns(netns_fds, pod.netns)
    fd_fabric = open_pod_netns(netns_fds, fabric.fabric_netns)
    view = await fabric.write_resolv_conf(pod.name, search=["prod.svc.cluster.local", "svc.cluster.local"])
    shown = await trio.run_process(
        ["ip", "netns", "exec", pod.netns, "cat", "/etc/resolv.conf"], capture_stdout=True
    )
    assert shown.stdout.decode() == view.read_text()
    assert f"nameserver {fabric.gateway}" in view.read_text()

    dns_proxy = await socket_in_netns(fd_pod, socket.AF_INET, socket.SOCK_DGRAM)
    upstream = await socket_in_netns(fd_fabric, socket.AF_INET, socket.SOCK_DGRAM)
    app = await socket_in_netns(fd_pod, socket.AF_INET, socket.SOCK_DGRAM)
    ztunnel_forwarder = await socket_in_netns(fd_pod, socket.AF_INET, socket.SOCK_DGRAM)
    with dns_proxy, upstream, app, ztunnel_forwarder:
        # bound to 127.0.0.1: REDIRECT in OUTPUT sends to loopback, and a UDP reply must come from
        # exactly that address for conntrack to undo the NAT (a 0.0.0.0 bind answers from the pod IP)
        await dns_proxy.bind(("127.0.0.1", 15053))
        await upstream.bind((fabric.gateway, 53))
        with trio.fail_after(10):
            await app.sendto(b"query", (fabric.gateway, 53))
            data, asker = await dns_proxy.recvfrom(512)
            assert (data, asker[0]) == (b"query", pod.ip)
            await dns_proxy.sendto(b"answer", asker)
            answer, answered_by = await app.recvfrom(512)
            assert (answer, answered_by) == (b"answer", (fabric.gateway, 53))  # NAT undone on the reply

            set_mark(ztunnel_forwarder, PROXY_MARK)
            await ztunnel_forwarder.sendto(b"forwarded", (fabric.gateway, 53))
            data, sender = await upstream.recvfrom(512)
            assert (data, sender[0]) == (b"forwarded", pod.ip)
    await fabric.delete_pod(pod.name)
    assert not view.exists()
