"""Node agent → ZDS → ztunnel end to end: rules installed, netns fd handed over, in-pod listener serves.

The "ztunnel" is a small handler on a real :class:`ZdsServer`: on ``add`` it opens a 15001 listener in
the namespace behind the fd it received (the way the real one will), on ``del`` it closes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from meshcore.net.netns import listen_tcp_in_netns
from meshcore.net.sockopts import original_destination
from ztunnel.capture.agent import CapturedPod, NodeAgent
from ztunnel.capture.fabric import Fabric, PodNetwork
from ztunnel.capture.rules import rules_present
from ztunnel.capture.zds import WorkloadInfo
from ztunnel.capture.zds_server import ZdsServer

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (make test installs it)"),
]


class InPodOutbound:
    """Answers every captured outbound connection with the destination it was meant for."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: dict[str, trio.CancelScope] = {}
        self.added: list[tuple[str, WorkloadInfo | None]] = []
        self.deleted: list[str] = []

    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        listener = await listen_tcp_in_netns(netns_fd, "0.0.0.0", 15001)
        scope = trio.CancelScope()
        self._scopes[uid] = scope
        self._nursery.start_soon(self._serve, listener, scope)
        self.added.append((uid, info))

    async def on_del(self, uid: str) -> None:
        self._scopes.pop(uid).cancel()
        self.deleted.append(uid)

    async def _serve(self, listener: trio.socket.SocketType, scope: trio.CancelScope) -> None:
        with scope, listener:
            while True:
                conn, _ = await listener.accept()
                async with trio.SocketStream(conn) as stream:
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 8192:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            break
                        request += chunk
                    host, port = original_destination(conn)
                    body = f"via ztunnel to {host}:{port}".encode()
                    await stream.send_all(
                        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )


async def curl_from(pod: PodNetwork, url: str) -> tuple[int, str]:
    result = await trio.run_process(
        ["ip", "netns", "exec", pod.netns, "curl", "-sS", "--noproxy", "*", "--max-time", "5", url],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, (result.stdout or result.stderr).decode()


def captured(pod: PodNetwork) -> CapturedPod:
    return CapturedPod(uid=f"uid-{pod.name}", name=pod.name, namespace="prod", netns=pod.netns, ip=pod.ip)


async def test_agent_captures_a_pod_through_zds(fabric: Fabric, tmp_path: Path) -> None:
    client = await fabric.create_pod("client")
    server = await fabric.create_pod("server")
    socket_path = tmp_path / "ztunnel.sock"

    async with trio.open_nursery() as nursery:
        ztunnel = InPodOutbound(nursery)
        zds = ZdsServer(socket_path, ztunnel)
        await nursery.start(zds.run)
        agent = NodeAgent(socket_path)
        await nursery.start(agent.run)  # started = connected and the (empty) snapshot acked
        assert agent.connected
        assert zds.snapshot_received.is_set()

        await agent.add_pod(captured(client))
        assert ztunnel.added == [("uid-client", WorkloadInfo("client", "prod", "default"))]
        assert await rules_present(client.netns)
        assert await curl_from(client, f"http://{server.ip}:8080/") == (0, f"via ztunnel to {server.ip}:8080")

        await agent.remove_pod("uid-client")
        assert ztunnel.deleted == ["uid-client"]
        assert zds.workloads == {}
        assert not await rules_present(client.netns)
        code, _ = await curl_from(client, f"http://{server.ip}:8080/")
        assert code != 0  # no capture any more, and nothing listens on the server pod
        nursery.cancel_scope.cancel()


async def test_restarted_ztunnel_gets_the_snapshot_again(fabric: Fabric, tmp_path: Path) -> None:
    client = await fabric.create_pod("client")
    server = await fabric.create_pod("server")
    socket_path = tmp_path / "ztunnel.sock"

    async def run_ztunnel(
        handlers: list[InPodOutbound], *, task_status: trio.TaskStatus[ZdsServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """One ztunnel "process": its ZDS server and in-pod listeners live and die together."""
        async with trio.open_nursery() as ztunnel_nursery:
            handler = InPodOutbound(ztunnel_nursery)
            handlers.append(handler)
            zds = ZdsServer(socket_path, handler)
            await ztunnel_nursery.start(zds.run)
            task_status.started(zds)

    async with trio.open_nursery() as nursery:
        handlers: list[InPodOutbound] = []
        first_scope = trio.CancelScope()

        async def run_first(task_status: trio.TaskStatus[ZdsServer] = trio.TASK_STATUS_IGNORED) -> None:
            with first_scope:
                await run_ztunnel(handlers, task_status=task_status)

        await nursery.start(run_first)
        agent = NodeAgent(socket_path)
        await nursery.start(agent.run)
        await agent.add_pod(captured(client))
        assert [uid for uid, _ in handlers[0].added] == ["uid-client"]

        first_scope.cancel()  # ztunnel dies: its fds and listeners go with it
        with trio.fail_after(10):
            await agent.wait_connected(False)

        second_zds = await nursery.start(run_ztunnel, handlers)
        with trio.fail_after(10):
            await second_zds.snapshot_received.wait()
        assert handlers[1].added == [("uid-client", WorkloadInfo("client", "prod", "default"))]
        assert await curl_from(client, f"http://{server.ip}:8080/") == (0, f"via ztunnel to {server.ip}:8080")
        nursery.cancel_scope.cancel()


async def test_pod_whose_netns_vanished_is_kept_not_fatal(fabric: Fabric, tmp_path: Path) -> None:
    """A snapshot entry whose namespace cannot be opened becomes ``keep`` (Istio's meaning), not a crash."""
    gone = await fabric.create_pod("gone")
    alive = await fabric.create_pod("alive")
    socket_path = tmp_path / "ztunnel.sock"

    async with trio.open_nursery() as nursery:
        agent = NodeAgent(socket_path)
        nursery.start_soon(agent.run)
        await agent.add_pod(captured(gone))
        await agent.add_pod(captured(alive))  # ztunnel not there yet: both wait for the snapshot
        await fabric.delete_pod("gone")  # the pod's namespace disappears behind the agent's back

        ztunnel = InPodOutbound(nursery)
        zds = ZdsServer(socket_path, ztunnel)
        await nursery.start(zds.run)
        with trio.fail_after(10):
            await zds.snapshot_received.wait()
            await agent.wait_connected()
        assert [uid for uid, _ in ztunnel.added] == ["uid-alive"]
        assert list(zds.workloads) == ["uid-alive"]
        nursery.cancel_scope.cancel()
