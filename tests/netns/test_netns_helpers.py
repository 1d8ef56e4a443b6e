"""setns in trio worker threads: the work happens in the pod, and the thread comes back home."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from meshcore.net.errors import NetnsError
from meshcore.net.netns import listen_tcp_in_netns, netns_inode, run_in_netns
from tests.netns.helpers import open_pod_netns
from ztunnel.capture.fabric import Fabric

pytestmark = pytest.mark.netns


async def test_worker_thread_returns_to_the_original_netns(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pod = await fabric.create_pod("probe")
    fd = open_pod_netns(netns_fds, pod.netns)
    original = netns_inode()

    inside = await run_in_netns(fd, netns_inode)
    assert inside == netns_inode(fd) != original
    # trio caches worker threads: later jobs (likely the very same thread) must see the host namespace
    for _ in range(5):
        assert await trio.to_thread.run_sync(netns_inode) == original
    assert netns_inode() == original


async def test_thread_is_restored_when_the_work_fails(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    pod = await fabric.create_pod("fails")
    fd = open_pod_netns(netns_fds, pod.netns)
    original = netns_inode()

    def explode() -> None:
        raise RuntimeError("boom inside the pod")

    with pytest.raises(RuntimeError, match="boom inside the pod"):
        await run_in_netns(fd, explode)
    assert await trio.to_thread.run_sync(netns_inode) == original


async def test_entering_a_non_namespace_fd_is_a_clear_error(tmp_path: object) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(NetnsError, match="cannot enter network namespace"):
            await run_in_netns(fd, netns_inode)
    finally:
        os.close(fd)
    assert await trio.to_thread.run_sync(netns_inode) == netns_inode()


async def test_sockets_keep_the_pod_namespace(fabric: Fabric, netns_fds: dict[str, int]) -> None:
    """A listener made in the pod serves pod addresses; the same port stays free on the host."""
    pod = await fabric.create_pod("listener")
    fd = open_pod_netns(netns_fds, pod.netns)
    with await listen_tcp_in_netns(fd, pod.ip, 15008) as listener:
        assert listener.getsockname() == (pod.ip, 15008)
        with socket.socket() as host_sock, pytest.raises(OSError):  # the pod's address is not on the host
            host_sock.bind((pod.ip, 15008))
