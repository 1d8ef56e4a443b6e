"""The trio shell of the DNS proxy: UDP and TCP listeners around :mod:`ztunnel.dns.resolver`.

One socket pair per address (in netns mode, one per pod namespace). A query the codec rejects is
answered FORMERR; an upstream that does not answer in time gives SERVFAIL; neither stops the server.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from ztunnel.dns.message import DnsFormatError, RCode, build_error, build_response, parse_query, peek_id
from ztunnel.dns.resolver import Answer, Forward, HostLookup, decide

log = structlog.get_logger("ztunnel.dns")

MAX_UDP = 4096
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_TIMEOUT = 10.0
MAX_IN_FLIGHT = 256


def upstream_from_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> tuple[str, int] | None:
    """The node's first nameserver, which non-mesh names are forwarded to (None: answer NXDOMAIN)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            return fields[1], 53
    return None


class DnsProxy:
    """Serves DNS on ``host:port`` over UDP and TCP.

    ``lookup`` is read on every query, so answers follow mesh state without a restart.
    ``socket_factory`` lets netns mode create the sockets inside a pod's namespace.
    """

    def __init__(
        self,
        lookup: HostLookup,
        *,
        host: str,
        port: int = 15053,
        upstream: tuple[str, int] | None = None,
        socket_factory: Callable[[int], trio.socket.SocketType] | None = None,
    ) -> None:
        self._lookup = lookup
        self._host = host
        self._port = port
        self._upstream = upstream
        self._socket_factory = socket_factory or (lambda kind: trio.socket.socket(_family(host), kind))
        self.queries = 0
        self.errors = 0
        # Bounds the UDP answers in progress (a forward can wait UPSTREAM_TIMEOUT): a flood of
        # queries then queues in the kernel's socket buffer instead of growing tasks without limit.
        self._in_flight = trio.CapacityLimiter(MAX_IN_FLIGHT)

    async def answer(self, packet: bytes) -> bytes | None:
        """The reply bytes for one query packet (None: nothing can be said, e.g. a 1-byte packet)."""
        self.queries += 1
        try:
            query = parse_query(packet)
        except DnsFormatError as exc:
            self.errors += 1
            ident = peek_id(packet)
            log.debug("dns_bad_query", error=str(exc))
            return None if ident is None else build_error(ident, RCode.FORMERR)
        decision = decide(query, self._lookup, has_upstream=self._upstream is not None)
        if isinstance(decision, Answer):
            return build_response(query, decision.rcode, list(decision.addresses))
        assert isinstance(decision, Forward) and self._upstream is not None
        reply = await self._forward(packet)
        if reply is None:
            return build_response(query, RCode.SERVFAIL, authoritative=False)
        return reply

    async def _forward(self, packet: bytes) -> bytes | None:
        assert self._upstream is not None
        host, port = self._upstream
        with trio.socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
            await sock.connect((host, port))
            await sock.send(packet)
            with trio.move_on_after(UPSTREAM_TIMEOUT):
                while True:
                    reply = await sock.recv(MAX_UDP)
                    if reply[:2] == packet[:2]:
                        return reply
        log.warning("dns_upstream_timeout", upstream=f"{host}:{port}")
        return None

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        udp, tcp = await self._bind_pair()
        with udp, tcp:
            tcp.listen(128)
            bound_port = udp.getsockname()[1]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_udp, udp, nursery)
                nursery.start_soon(self._serve_tcp, trio.SocketListener(tcp), nursery)
                task_status.started((self._host, bound_port))

    async def serve_udp_socket(
        self, sock: trio.socket.SocketType, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer queries on a UDP socket someone else bound (netns mode: the pod's ``127.0.0.1:15053``,
        opened by the capture code because the in-pod rules redirect only UDP 53)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_udp, sock, nursery)
            task_status.started()

    async def _bind_pair(self) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
        """UDP and TCP sockets on the same port.

        With port 0 the kernel picks a free UDP port, and the same number may already be taken for
        TCP by someone else: then both are closed and another port is tried (bounded).
        """
        attempts = 20 if self._port == 0 else 1
        for attempt in range(attempts):
            udp = self._socket_factory(socket.SOCK_DGRAM)
            tcp = self._socket_factory(socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await udp.bind((self._host, self._port))
                await tcp.bind((self._host, udp.getsockname()[1]))
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            return udp, tcp
        raise AssertionError("unreachable: the loop returns or raises")

    async def _serve_udp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            packet, peer = await sock.recvfrom(MAX_UDP)
            slot = object()
            await self._in_flight.acquire_on_behalf_of(slot)
            nursery.start_soon(self._answer_udp, sock, packet, peer, slot)

    async def _answer_udp(
        self, sock: trio.socket.SocketType, packet: bytes, peer: tuple[object, ...], slot: object
    ) -> None:
        try:
            reply = await self.answer(packet)
            if reply is not None:
                await sock.sendto(reply, peer)
        except OSError as exc:  # e.g. the client's port is gone; one lost answer, not the server
            log.debug("dns_send_failed", error=str(exc))
        finally:
            self._in_flight.release_on_behalf_of(slot)

    async def _serve_tcp(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._serve_tcp_connection, stream)

    async def _serve_tcp_connection(self, stream: trio.SocketStream) -> None:
        """RFC 7766 framing: a 2-byte length before each message; several queries per connection."""
        buffer = bytearray()
        async with stream:
            while True:
                with trio.move_on_after(TCP_IDLE_TIMEOUT) as idle:
                    while len(buffer) < 2 or len(buffer) < 2 + int.from_bytes(buffer[:2], "big"):
                        chunk = await stream.receive_some(MAX_UDP)
                        if not chunk:
                            return
                        buffer += chunk
                if idle.cancelled_caught:
                    return
                length = int.from_bytes(buffer[:2], "big")
                packet = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                reply = await self.answer(packet)
                if reply is None:
                    return
                try:
                    await stream.send_all(len(reply).to_bytes(2, "big") + reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
