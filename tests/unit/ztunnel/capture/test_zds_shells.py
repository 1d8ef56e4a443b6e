"""ZDS over a real SEQPACKET socketpair with real fd passing (no root needed: our own netns fd)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ztunnel.capture.errors import ZdsNack
from ztunnel.capture.zds import Add, Hello, WorkloadInfo, decode_response, encode
from ztunnel.capture.zds_client import (
    NodeAgentConnection,
    ZdsConnectionClosed,
    connect_ztunnel,
    open_node_agent_connection,
)
from ztunnel.capture.zds_server import ZdsServer, peer_uid
from ztunnel.capture.zds_socket import receive_packet, send_packet, seqpacket_pair

OWN_NETNS = "/proc/self/ns/net"


def fds_on(inode: int) -> int:
    """How many of this process's fds refer to namespace ``inode`` (to prove fds are closed, not leaked)."""
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == f"net:[{inode}]":
                count += 1
        except OSError:
            continue
    return count


class RecordingHandler:
    """A ztunnel stand-in: records what it was told and checks the fd really is a netns."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.refuse = refuse or set()

    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        if uid in self.refuse:
            raise RuntimeError(f"cannot enter netns of {uid}")
        self.events.append(("add", uid, (info, os.fstat(netns_fd).st_ino)))

    async def on_del(self, uid: str) -> None:
        self.events.append(("del", uid, None))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ZdsServer, RecordingHandler, NodeAgentConnection]]:
    handler = RecordingHandler(refuse={"broken"})
    server = ZdsServer(None, handler)
    ztunnel_side, agent_side = seqpacket_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, server, ztunnel_side)
        async with open_node_agent_connection(agent_side, ack_timeout=5) as conn:
            yield server, handler, conn
        nursery.cancel_scope.cancel()
    server.close_all()


async def _serve(server: ZdsServer, sock: trio.socket.SocketType) -> None:
    with sock:
        await server.serve_connection(sock)


async def test_hello_add_snapshot_del_with_fd_passing(
    pair: tuple[ZdsServer, RecordingHandler, NodeAgentConnection],
) -> None:
    server, handler, conn = pair
    inode = os.stat(OWN_NETNS).st_ino
    before = fds_on(inode)
    assert (await conn.wait_hello()).version == 1

    fd = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await conn.add("pod-1", WorkloadInfo("web", "prod", "web-sa"), fd)
    finally:
        os.close(fd)
    assert handler.events == [("add", "pod-1", (WorkloadInfo("web", "prod", "web-sa"), inode))]
    assert fds_on(inode) == before + 1  # ztunnel's copy, ours is closed

    await conn.snapshot_sent()
    assert server.snapshot_received.is_set()

    await conn.delete("pod-1")
    assert handler.events[-1] == ("del", "pod-1", None)
    assert server.workloads == {}
    assert fds_on(inode) == before  # closed when the pod was deleted


async def test_handler_failure_is_a_nack_and_the_fd_is_closed(
    pair: tuple[ZdsServer, RecordingHandler, NodeAgentConnection],
) -> None:
    server, _, conn = pair
    await conn.wait_hello()
    inode = os.stat(OWN_NETNS).st_ino
    before = fds_on(inode)
    fd = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(ZdsNack, match="cannot enter netns of broken"):
            await conn.add("broken", None, fd)
    finally:
        os.close(fd)
    assert fds_on(inode) == before
    assert server.workloads == {}
    await conn.snapshot_sent()  # the connection survives a nack


async def test_replayed_add_keeps_the_workload_and_closes_the_extra_fd(
    pair: tuple[ZdsServer, RecordingHandler, NodeAgentConnection],
) -> None:
    server, handler, conn = pair
    await conn.wait_hello()
    inode = os.stat(OWN_NETNS).st_ino
    before = fds_on(inode)
    fd = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await conn.add("pod-1", None, fd)
        await conn.add("pod-1", None, fd)
    finally:
        os.close(fd)
    assert [event[0] for event in handler.events] == ["add"]
    assert fds_on(inode) == before + 1
    assert list(server.workloads) == ["pod-1"]


async def test_protocol_violation_is_nacked_and_extra_fds_closed() -> None:
    server = ZdsServer(None, RecordingHandler())
    ztunnel_side, agent_side = seqpacket_pair()
    inode = os.stat(OWN_NETNS).st_ino
    before = fds_on(inode)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, server, ztunnel_side)
        with agent_side:
            hello = await receive_packet(agent_side)
            assert decode_response(hello.data) == Hello()
            fd = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
            try:
                await send_packet(agent_side, b'{"type":"del","uid":"x"}', (fd, fd))
                ack = decode_response((await receive_packet(agent_side)).data)
                await send_packet(agent_side, encode(Add(uid="y")))  # add without its fd
                missing = decode_response((await receive_packet(agent_side)).data)
            finally:
                os.close(fd)
        # agent side closed: the server returns on EOF
    assert "del must not carry fds" in getattr(ack, "error", "")
    assert "exactly one netns fd, got 0" in getattr(missing, "error", "")
    assert fds_on(inode) == before
    assert server.workloads == {}


async def test_agent_sees_ztunnel_going_away() -> None:
    server = ZdsServer(None, RecordingHandler())
    ztunnel_side, agent_side = seqpacket_pair()
    async with open_node_agent_connection(agent_side, ack_timeout=5) as conn:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, server, ztunnel_side)
            await conn.wait_hello()
            nursery.cancel_scope.cancel()  # ztunnel stops; _serve closes its end
        await conn.closed.wait()
        with pytest.raises(ZdsConnectionClosed):
            await conn.snapshot_sent()


async def test_server_listens_on_a_path_and_serves_reconnecting_agents(tmp_path: Path) -> None:
    handler = RecordingHandler()
    server = ZdsServer(tmp_path / "zds.sock", handler)
    async with trio.open_nursery() as nursery:
        path = await nursery.start(server.run)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        for attempt in range(2):  # the second connection replays the snapshot
            async with open_node_agent_connection(await connect_ztunnel(Path(path)), ack_timeout=5) as conn:
                await conn.wait_hello()
                fd = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    await conn.add("pod-1", None, fd)
                finally:
                    os.close(fd)
                await conn.snapshot_sent()
            assert list(server.workloads) == ["pod-1"], attempt
        nursery.cancel_scope.cancel()
    assert [event[0] for event in handler.events] == ["add"]
    assert server.workloads == {}  # closed on shutdown
    assert not (tmp_path / "zds.sock").exists()


def test_peer_uid_is_the_connecting_process_user() -> None:
    ztunnel_side, agent_side = seqpacket_pair()
    with ztunnel_side, agent_side:
        assert peer_uid(ztunnel_side) == os.getuid()
