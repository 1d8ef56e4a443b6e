"""ztunnel's side of ZDS: accept the node agent, take pods' netns fds, ack or nack each request.

ztunnel owns each received netns fd until the pod is deleted (or dropped by snapshot reconciliation,
or ztunnel stops): then the handler is told and the fd is closed. A repeated ``add`` for a pod ztunnel
already has (the agent replays its snapshot on every reconnect) keeps the existing workload and closes
the new fd, so a reconnect never restarts a pod's listeners.

The handler's exceptions become nacks carrying their text; they never end the connection.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Protocol

import structlog
import trio

from ztunnel.capture.errors import ZdsProtocolError
from ztunnel.capture.zds import (
    Ack,
    Add,
    Delete,
    Hello,
    Keep,
    Request,
    SnapshotReconciler,
    SnapshotSent,
    WorkloadInfo,
    decode_request,
    encode,
)
from ztunnel.capture.zds_socket import Packet, receive_packet, send_packet, seqpacket_socket

log = structlog.get_logger("ztunnel.capture.zds")


class WorkloadHandler(Protocol):
    """What ztunnel does with pods: start in-pod listeners on add, stop them on delete."""

    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        """Start capturing the pod; ``netns_fd`` stays valid until ``on_del`` returns (dup it to keep it)."""

    async def on_del(self, uid: str) -> None:
        """Stop capturing the pod; its fd is closed right after this returns."""


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The connecting process's uid (SO_PEERCRED): only root or our own user may hand us namespaces."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ZdsServer:
    """Listens on a Unix SEQPACKET path and serves one node agent connection at a time."""

    def __init__(self, path: Path | None, handler: WorkloadHandler) -> None:
        self._path = path
        self._handler = handler
        self._netns: dict[str, int] = {}
        self.snapshot_received = trio.Event()

    @property
    def workloads(self) -> dict[str, int]:
        """uid → netns fd of the pods ztunnel currently captures (fds owned by the server)."""
        return dict(self._netns)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket, report its path, then serve agents until cancelled; closes all fds on exit."""
        if self._path is None:
            raise ZdsProtocolError(
                "ZdsServer.run needs a socket path", detail="pass path= or use serve_connection"
            )
        listener = seqpacket_socket()
        try:
            if self._path.is_socket():
                self._path.unlink()
            await listener.bind(str(self._path))
            os.chmod(self._path, 0o600)  # whoever may connect can make ztunnel enter namespaces
            listener.listen(1)
            task_status.started(str(self._path))
            while True:
                conn, _ = await listener.accept()
                with conn:
                    uid = peer_uid(conn)
                    if uid not in (0, os.getuid()):
                        log.warning("zds connection refused", peer_uid=uid)
                        continue
                    await self.serve_connection(conn)
        finally:
            listener.close()
            self._path.unlink(missing_ok=True)
            self.close_all()

    def close_all(self) -> None:
        """Close every held netns fd (ztunnel is stopping; handlers are being torn down anyway)."""
        for fd in self._netns.values():
            os.close(fd)
        self._netns.clear()

    async def serve_connection(self, sock: trio.socket.SocketType) -> None:
        """Speak ZDS on an accepted (or paired) socket until the agent hangs up."""
        await send_packet(sock, encode(Hello()))
        reconciler = SnapshotReconciler(self._netns)
        while True:
            packet = await receive_packet(sock)
            if packet.eof:
                log.info("zds agent disconnected", workloads=len(self._netns))
                return
            ack = await self._handle_packet(packet, reconciler)
            await send_packet(sock, encode(ack))

    async def _handle_packet(self, packet: Packet, reconciler: SnapshotReconciler) -> Ack:
        try:
            request = decode_request(packet.data, fd_count=len(packet.fds), truncated=packet.truncated)
            stale = reconciler.observe(request)
        except ZdsProtocolError as exc:
            packet.close_fds()
            log.warning("zds bad request", error=str(exc))
            return Ack(error=str(exc))
        try:
            await self._apply(request, packet.fds)
            for uid in sorted(stale):
                await self._remove(uid)
        except Exception as exc:
            log.warning("zds request failed", request=repr(request), error=str(exc))
            return Ack(error=f"{type(exc).__name__}: {exc}")
        return Ack()

    async def _apply(self, request: Request, fds: tuple[int, ...]) -> None:
        match request:
            case Add(uid=uid, workload_info=info):
                (fd,) = fds
                if uid in self._netns:
                    os.close(fd)  # replayed snapshot: the workload is already captured
                    return
                try:
                    await self._handler.on_add(uid, info, fd)
                except BaseException:
                    os.close(fd)
                    raise
                self._netns[uid] = fd
                log.info("zds workload added", uid=uid)
            case Delete(uid=uid):
                await self._remove(uid)
            case Keep():
                pass
            case SnapshotSent():
                self.snapshot_received.set()

    async def _remove(self, uid: str) -> None:
        fd = self._netns.pop(uid, None)
        if fd is None:
            return  # deleting an unknown pod is not an error: the agent may retry after a lost ack
        try:
            await self._handler.on_del(uid)
        finally:
            os.close(fd)
        log.info("zds workload deleted", uid=uid)
