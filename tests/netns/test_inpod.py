"""In-pod listeners: opened in the pod's namespace on add, serving captured traffic, gone on delete."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from meshcore.net.netns import connect_tcp_from_netns, listen_tcp_in_netns, socket_in_netns
from meshcore.net.sockopts import original_destination
from tests.netns.helpers import open_pod_netns
from ztunnel.capture.fabric import Fabric
from ztunnel.capture.inpod import InPodWorkload, InPodWorkloadManager
from ztunnel.capture.rules import install_pod_rules, render_pod_rules
from ztunnel.capture.zds import WorkloadInfo

pytestmark = pytest.mark.netns


def open_fds_to(inode: int) -> int:
    """How many of our fds refer to the namespace ``inode`` (however they were opened)."""
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.stat(f"/proc/self/fd/{entry}").st_ino == inode:
                count += 1
        except OSError:
            continue
    return count


async def serve_destinations(workload: InPodWorkload) -> None:
    """A stand-in for ztunnel's proxies: tell each captured TCP client and DNS query where it was going."""

    async def outbound() -> None:
        while True:
            conn, _ = await workload.sockets.outbound.accept()
            with conn:
                host, port = original_destination(conn)
                await conn.send(f"{workload.uid} -> {host}:{port}".encode())

    async def dns() -> None:
        while True:
            query, asker = await workload.sockets.dns_udp.recvfrom(512)
            await workload.sockets.dns_udp.sendto(b"answer to " + query, asker)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbound)
        nursery.start_soon(dns)


async def test_pod_listeners_live_from_add_to_delete(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pod = await fabric.create_pod("app")
    other = await fabric.create_pod("other")
    await install_pod_rules(pod.netns, render_pod_rules())
    fd = open_pod_netns(netns_fds, pod.netns)
    inode = os.fstat(fd).st_ino

    async with trio.open_nursery() as nursery:
        manager = InPodWorkloadManager(serve_destinations)
        await nursery.start(manager.run)
        await manager.on_add("uid-app", WorkloadInfo("app", "prod"), fd)
        assert open_fds_to(inode) == 2  # ours plus the manager's own duplicate
        assert list(manager.workloads) == ["uid-app"]

        async with await connect_tcp_from_netns(fd, (other.ip, 9090), mark=None) as app_conn:
            assert await app_conn.receive_some(100) == f"uid-app -> {other.ip}:9090".encode()

        resolver = await socket_in_netns(fd, socket.AF_INET, socket.SOCK_DGRAM)
        with resolver, trio.fail_after(10):
            await resolver.sendto(b"web.prod", (fabric.gateway, 53))
            assert await resolver.recvfrom(512) == (b"answer to web.prod", (fabric.gateway, 53))

        await manager.on_del("uid-app")
        assert manager.workloads == {}
        assert open_fds_to(inode) == 1
        # the pod's ports are free again in its namespace: nothing of ztunnel is left listening there
        with await listen_tcp_in_netns(fd, "0.0.0.0", 15001):
            pass
        nursery.cancel_scope.cancel()


async def test_failed_listener_setup_leaves_nothing_open(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pod = await fabric.create_pod("busy")
    fd = open_pod_netns(netns_fds, pod.netns)
    inode = os.fstat(fd).st_ino
    async with trio.open_nursery() as nursery:
        manager = InPodWorkloadManager(serve_destinations)
        await nursery.start(manager.run)
        with (
            await listen_tcp_in_netns(fd, "0.0.0.0", 15008),  # something already holds the HBONE port
            pytest.raises(OSError, match="Address already in use"),
        ):
            await manager.on_add("uid-busy", None, fd)
        assert manager.workloads == {}
        assert open_fds_to(inode) == 1
        with await listen_tcp_in_netns(fd, "0.0.0.0", 15001):  # 15001 was opened, then closed again
            pass
        nursery.cancel_scope.cancel()


async def test_stopping_the_manager_closes_every_pod(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pods = [await fabric.create_pod(name) for name in ("p1", "p2")]
    fds = [open_pod_netns(netns_fds, pod.netns) for pod in pods]
    async with trio.open_nursery() as nursery:
        manager = InPodWorkloadManager(serve_destinations)
        scope = trio.CancelScope()

        async def run_manager(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await manager.run(task_status=task_status)

        await nursery.start(run_manager)
        for pod, fd in zip(pods, fds, strict=True):
            await manager.on_add(f"uid-{pod.name}", None, fd)
        assert len(manager.workloads) == 2
        scope.cancel()
    assert manager.workloads == {}
    for fd in fds:
        assert open_fds_to(os.fstat(fd).st_ino) == 1
