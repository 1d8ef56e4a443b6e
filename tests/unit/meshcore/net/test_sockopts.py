"""Socket option helpers: sockaddr_in parsing and the options an unprivileged process can set."""

from __future__ import annotations

import socket
import struct

import pytest

from meshcore.net.errors import SocketOptionError
from meshcore.net.sockopts import (
    SO_ORIGINAL_DST,
    SOL_IP,
    original_destination,
    parse_sockaddr_in,
    set_nodelay,
)


def sockaddr_in(ip: str, port: int) -> bytes:
    """What the kernel writes for SO_ORIGINAL_DST: family in host order, port and address in network order."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


@pytest.mark.parametrize(
    ("ip", "port"),
    [("198.18.0.3", 8080), ("10.0.0.1", 1), ("240.240.0.10", 65535), ("0.0.0.0", 0)],
)
def test_parse_sockaddr_in(ip: str, port: int) -> None:
    assert parse_sockaddr_in(sockaddr_in(ip, port)) == (ip, port)


def test_short_sockaddr_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 16 bytes, got 8"):
        parse_sockaddr_in(bytes(8))


class FakeSocket:
    """Returns a canned SO_ORIGINAL_DST answer or error, to test the mapping without netfilter."""

    def __init__(self, answer: bytes | OSError) -> None:
        self.answer = answer
        self.asked: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, optname: int, value: int | bytes, /) -> None:
        raise OSError(1, "Operation not permitted")

    def getsockopt(self, level: int, optname: int, buflen: int = 0, /) -> bytes:
        self.asked.append((level, optname, buflen))
        if isinstance(self.answer, OSError):
            raise self.answer
        return self.answer


def test_original_destination_asks_the_kernel_for_sockaddr_in() -> None:
    fake = FakeSocket(sockaddr_in("198.18.0.9", 8080))
    assert original_destination(fake) == ("198.18.0.9", 8080)  # type: ignore[arg-type]
    assert fake.asked == [(SOL_IP, SO_ORIGINAL_DST, 16)]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(2, "No such file or directory"), "no original destination recorded"),
        (OSError(92, "Protocol not available"), "getsockopt SO_ORIGINAL_DST failed"),
    ],
)
def test_original_destination_errors_say_what_to_check(error: OSError, message: str) -> None:
    with pytest.raises(Exception, match=message) as info:
        original_destination(FakeSocket(error))  # type: ignore[arg-type]
    assert "hint:" in str(info.value)


def test_failed_setsockopt_names_the_option() -> None:
    with pytest.raises(SocketOptionError, match="TCP_NODELAY") as info:
        set_nodelay(FakeSocket(b""))  # type: ignore[arg-type]
    assert "CAP_NET_ADMIN" in str(info.value)


def test_nodelay_on_a_real_socket() -> None:
    with socket.socket() as sock:
        set_nodelay(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        set_nodelay(sock, False)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
