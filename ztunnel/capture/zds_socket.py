"""ZDS framing on a Unix SOCK_SEQPACKET socket: one message per packet, fds as SCM_RIGHTS.

SEQPACKET keeps message boundaries, so no length prefix is needed, and a peer that closes is seen
as a zero-length read. Received fds are close-on-exec (MSG_CMSG_CLOEXEC) and are closed here if the
message turns out to be malformed; on success the caller owns them.
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Sequence

import attrs
import trio

from ztunnel.capture.zds import MAX_FDS_PER_MESSAGE, MAX_MESSAGE_BYTES

_FD_BYTES = array.array("i").itemsize


@attrs.frozen
class Packet:
    """One received message: its bytes, the fds it carried, and whether the kernel truncated it."""

    data: bytes
    fds: tuple[int, ...]
    truncated: bool

    @property
    def eof(self) -> bool:
        """A zero-length packet without fds: the peer closed the connection."""
        return not self.data and not self.fds

    def close_fds(self) -> None:
        """Close every fd the packet carried (on errors, or when the receiver does not want them)."""
        for fd in self.fds:
            os.close(fd)


async def send_packet(sock: trio.socket.SocketType, data: bytes, fds: Sequence[int] = ()) -> None:
    """Send one message, with ``fds`` duplicated into the receiver (ours stay open)."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sent = await sock.sendmsg([data], ancillary)
    if sent != len(data):  # SEQPACKET sends whole messages; anything else is a kernel surprise
        raise OSError(f"short SEQPACKET send: {sent} of {len(data)} bytes")


async def receive_packet(sock: trio.socket.SocketType) -> Packet:
    """Receive one message and any fds it carries."""
    data, ancdata, flags, _ = await sock.recvmsg(
        MAX_MESSAGE_BYTES, socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * _FD_BYTES), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % _FD_BYTES)])
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
    return Packet(data=data, fds=tuple(fds), truncated=truncated)


def seqpacket_socket() -> trio.socket.SocketType:
    """A fresh Unix SEQPACKET trio socket."""
    return trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def seqpacket_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A connected pair (tests, and in-process agents)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return trio.socket.from_stdlib_socket(a), trio.socket.from_stdlib_socket(b)
