"""The node agent's side of ZDS: wait for ztunnel's hello, then send requests one at a time.

A reader task owns the receive side of the socket (so a ztunnel that goes away is noticed even while
the agent is idle) and passes acks to whoever is waiting; a lock keeps one request in flight, which
is what makes each ack belong to the request before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from ztunnel.capture.errors import ZdsNack, ZdsProtocolError
from ztunnel.capture.zds import (
    ZDS_VERSION,
    Ack,
    Add,
    Delete,
    Hello,
    Keep,
    Request,
    SnapshotSent,
    WorkloadInfo,
    decode_response,
    encode,
)
from ztunnel.capture.zds_socket import receive_packet, send_packet, seqpacket_socket

ACK_TIMEOUT = 10.0


class ZdsConnectionClosed(ZdsProtocolError):
    """ztunnel closed the connection (it stopped or restarted)."""


class NodeAgentConnection:
    """One connection to a ztunnel; create with :func:`open_node_agent_connection`."""

    def __init__(self, sock: trio.socket.SocketType, *, ack_timeout: float = ACK_TIMEOUT) -> None:
        self._sock = sock
        self._ack_timeout = ack_timeout
        self._lock = trio.Lock()
        self._acks_in, self._acks_out = trio.open_memory_channel[Ack](1)
        self._hello: Hello | None = None
        self._hello_event = trio.Event()
        self.closed = trio.Event()

    async def _reader(self) -> None:
        try:
            async with self._acks_in:
                while True:
                    packet = await receive_packet(self._sock)
                    packet.close_fds()  # ztunnel never sends fds
                    if packet.eof:
                        return
                    message = decode_response(packet.data)
                    if isinstance(message, Hello):
                        self._hello = message
                        self._hello_event.set()
                    else:
                        await self._acks_in.send(message)
        except (OSError, ZdsProtocolError):
            return
        finally:
            self.closed.set()
            self._hello_event.set()

    async def wait_hello(self) -> Hello:
        """ztunnel's hello; refuses a version this agent does not speak."""
        with trio.fail_after(self._ack_timeout):
            await self._hello_event.wait()
        if self._hello is None:
            raise ZdsConnectionClosed(
                "ztunnel closed the connection before hello", detail="is ztunnel running?"
            )
        if self._hello.version != ZDS_VERSION:
            raise ZdsProtocolError(
                f"ztunnel speaks ZDS version {self._hello.version}", detail=f"this agent speaks {ZDS_VERSION}"
            )
        return self._hello

    async def _request(self, request: Request, fds: tuple[int, ...] = ()) -> None:
        uid = getattr(request, "uid", "-")
        async with self._lock:
            if self.closed.is_set():
                raise ZdsConnectionClosed("connection to ztunnel is closed", detail="reconnect and resend")
            try:
                await send_packet(self._sock, encode(request), fds)
            except OSError as exc:
                raise ZdsConnectionClosed(
                    f"send to ztunnel failed: {exc}", detail="reconnect and resend"
                ) from exc
            try:
                with trio.fail_after(self._ack_timeout):
                    ack = await self._acks_out.receive()
            except trio.EndOfChannel as exc:
                raise ZdsConnectionClosed(
                    "ztunnel closed before acking", detail="reconnect and resend"
                ) from exc
            except trio.TooSlowError as exc:
                raise ZdsProtocolError(
                    f"no ack within {self._ack_timeout}s", detail="ztunnel is stuck or not speaking ZDS"
                ) from exc
        if not ack.ok:
            raise ZdsNack(f"ztunnel refused {type(request).__name__.lower()}: {ack.error}", uid=uid)

    async def add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        """Hand the pod's netns to ztunnel (our fd stays open; the kernel gives ztunnel its own)."""
        await self._request(Add(uid=uid, workload_info=info), (netns_fd,))

    async def keep(self, uid: str) -> None:
        """Snapshot only: ask ztunnel to keep a pod whose netns we cannot reopen."""
        await self._request(Keep(uid=uid))

    async def snapshot_sent(self) -> None:
        """Tell ztunnel the snapshot is complete (it drops pods we did not mention)."""
        await self._request(SnapshotSent())

    async def delete(self, uid: str) -> None:
        """The pod is gone."""
        await self._request(Delete(uid=uid))


@contextlib.asynccontextmanager
async def open_node_agent_connection(
    sock: trio.socket.SocketType, *, ack_timeout: float = ACK_TIMEOUT
) -> AsyncIterator[NodeAgentConnection]:
    """Run the connection's reader for the duration of the block; the socket is closed afterwards."""
    conn = NodeAgentConnection(sock, ack_timeout=ack_timeout)
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._reader)
            try:
                yield conn
            finally:
                nursery.cancel_scope.cancel()


async def connect_ztunnel(path: Path) -> trio.socket.SocketType:
    """Connect to a ztunnel's ZDS socket."""
    sock = seqpacket_socket()
    try:
        await sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = [
    "NodeAgentConnection",
    "ZdsConnectionClosed",
    "connect_ztunnel",
    "open_node_agent_connection",
]
