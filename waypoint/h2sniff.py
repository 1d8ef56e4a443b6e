"""Tell HTTP/2 prior knowledge from HTTP/1.1 by the first bytes of a connection.

A service port whose ``appProtocol`` says ``http`` (or nothing) may carry either; h2c with prior
knowledge always opens with the fixed client preface, which no HTTP/1.1 request line can start with,
so the waypoint reads just enough bytes to decide and then hands the stream, bytes replayed, to
:func:`~waypoint.h2server.serve_http2` or :func:`~waypoint.http1.serve_http1`.
"""

from __future__ import annotations

from typing import Literal

import trio

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Protocol = Literal["h2", "http1"]


def sniff_protocol(first_bytes: bytes) -> Protocol | None:
    """``"h2"`` if the bytes start with the HTTP/2 preface, ``"http1"`` if they cannot.

    ``None`` means "undecided": the bytes are a proper prefix of the preface, read more.
    """
    if first_bytes.startswith(H2_PREFACE):
        return "h2"
    if first_bytes and H2_PREFACE.startswith(first_bytes):
        return None
    return "http1"


class PrefixedStream(trio.abc.Stream):
    """A stream whose first reads return bytes already taken from the wrapped stream."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def sniff_stream(stream: trio.abc.Stream) -> tuple[Protocol, trio.abc.Stream]:
    """Read until the protocol is known; returns it and a stream that replays what was read.

    At most ``len(H2_PREFACE)`` bytes are needed, so the loop ends after that many reads at worst;
    a peer that closes early is treated as HTTP/1.1 (whose server then sees the short input).
    """
    seen = b""
    for _ in range(len(H2_PREFACE)):
        data = await stream.receive_some(len(H2_PREFACE) - len(seen))
        if not data:
            break
        seen += bytes(data)
        decided = sniff_protocol(seen)
        if decided is not None:
            return decided, PrefixedStream(stream, seen)
    return "http1", PrefixedStream(stream, seen)
