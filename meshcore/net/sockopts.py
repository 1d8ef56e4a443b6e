"""The socket options transparent capture relies on, with the numbers Python's ``socket`` lacks.

- ``SO_ORIGINAL_DST``: where a nat-REDIRECTed connection was going before the rules sent it to us.
- ``IP_TRANSPARENT`` + ``IP_FREEBIND``: bind to the *client's* address so the app sees its real peer.
- ``SO_MARK``: the proxy's own sockets carry 0x539 so the in-pod rules do not capture them again.

Both stdlib and trio sockets are accepted (anything with ``setsockopt``/``getsockopt``).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Protocol, overload

from meshcore.net.errors import OriginalDestinationUnavailable, SocketOptionError

SOL_IP = 0
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP_TRANSPARENT = 19  # linux/in.h
IP_FREEBIND = 15  # linux/in.h
SO_MARK = 36  # asm-generic/socket.h
PROXY_MARK = 0x539  # Istio's mark for ztunnel's own sockets

_SOCKADDR_IN = struct.Struct("!2xH4s8x")  # family (host order, skipped), port, address, zero padding


class SupportsSockopt(Protocol):
    """What stdlib and trio sockets have in common for option handling."""

    def setsockopt(self, level: int, optname: int, value: int | bytes, /) -> None: ...

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def _set(sock: SupportsSockopt, level: int, option: int, value: int, name: str) -> None:
    try:
        sock.setsockopt(level, option, value)
    except OSError as exc:
        raise SocketOptionError(f"setsockopt {name}={value:#x} failed: {exc.strerror}", option=name) from exc


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """Decode a kernel ``struct sockaddr_in`` (16 bytes) into ``(ip, port)``."""
    if len(raw) < _SOCKADDR_IN.size:
        raise ValueError(f"sockaddr_in needs {_SOCKADDR_IN.size} bytes, got {len(raw)}")
    port, packed = _SOCKADDR_IN.unpack_from(raw)
    return socket.inet_ntop(socket.AF_INET, packed), port


def original_destination(sock: SupportsSockopt) -> tuple[str, int]:
    """The ``(ip, port)`` an IPv4 connection was addressed to before nat REDIRECT rewrote it."""
    try:
        raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise OriginalDestinationUnavailable(
                "no original destination recorded for this connection"
            ) from exc
        raise SocketOptionError(
            f"getsockopt SO_ORIGINAL_DST failed: {exc.strerror}", option="SO_ORIGINAL_DST"
        ) from exc
    return parse_sockaddr_in(raw)


def set_transparent(sock: SupportsSockopt, enabled: bool = True) -> None:
    """IP_TRANSPARENT: allow binding a non-local (client) address and accepting TPROXYed flows."""
    _set(sock, SOL_IP, IP_TRANSPARENT, int(enabled), "IP_TRANSPARENT")


def set_freebind(sock: SupportsSockopt, enabled: bool = True) -> None:
    """IP_FREEBIND: bind an address that is not (yet) configured on any interface."""
    _set(sock, SOL_IP, IP_FREEBIND, int(enabled), "IP_FREEBIND")


def set_mark(sock: SupportsSockopt, mark: int = PROXY_MARK) -> None:
    """SO_MARK: tag the proxy's own traffic so the capture rules let it pass."""
    _set(sock, socket.SOL_SOCKET, SO_MARK, mark, "SO_MARK")


def get_mark(sock: SupportsSockopt) -> int:
    """The socket's SO_MARK (0 when unset)."""
    return sock.getsockopt(socket.SOL_SOCKET, SO_MARK)


def set_nodelay(sock: SupportsSockopt, enabled: bool = True) -> None:
    """TCP_NODELAY: proxied bytes go out as they arrive; the app already chose its own batching."""
    _set(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled), "TCP_NODELAY")
