"""TCP listeners that several processes can share (``SO_REUSEPORT``), for multi-core proxies.

Python runs one core per process, so a ztunnel that wants more cores runs several worker processes
that bind the *same* listening addresses; the kernel then spreads new connections across them by a
hash of the 4-tuple. Every socket of such a group must set ``SO_REUSEPORT`` before ``bind`` (and the
processes must share an effective UID, which the kernel enforces) — so the option is only set when a
proxy is started with several workers: a lone proxy keeps the default "address in use" protection.
"""

from __future__ import annotations

import socket

import trio

LISTEN_BACKLOG = 1024


def _bound_socket(family: socket.AddressFamily, address: tuple[str, int], reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_tcp_listeners(port: int, *, host: str, reuse_port: bool = False) -> list[trio.SocketListener]:
    """Listen on ``host:port`` like :func:`trio.open_tcp_listeners`, optionally in a ``SO_REUSEPORT`` group.

    Without ``reuse_port`` this is trio's own function (same behaviour for every caller); with it the
    one address ``host`` resolves to is bound with the option set.
    """
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    sock = _bound_socket(family, (str(address[0]), int(address[1])), reuse_port=True)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
