"""Protocol-neutral HTTP messages, so routing and filters see one shape for HTTP/1.1 and HTTP/2.

Bodies stream: a :class:`Body` is an async source of chunks followed by optional trailers. A retry
needs the request body again, so a body can be *buffered* up to a limit; once more than that has
streamed upstream, :attr:`Body.replayable` is false and the retry logic must not replay it (Envoy's
rule: never retry a request whose body no longer fits the buffer).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing

import attrs

Headers = list[tuple[bytes, bytes]]
"""Header list with lower-case names, order and duplicates preserved."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"http2-settings",
    }
)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """First value of ``name`` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def without_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Drop hop-by-hop headers and those the Connection header names (RFC 9110 §7.6.1)."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for key, value in pairs
        if key == b"connection"
        for token in value.split(b",")
        if token.strip()
    }
    return [(k, v) for k, v in pairs if k not in HOP_BY_HOP and k not in named]


ChunkSource = Callable[[], Awaitable[bytes]]
"""Returns the next body chunk; ``b""`` means the body is complete."""


class Body:
    """A streamed message body with an optional replay buffer.

    ``source`` yields chunks until ``b""``. ``buffer_limit`` bytes are kept so the body can be sent
    again (retries, mirroring); the first read past that limit turns :attr:`replayable` off.
    """

    def __init__(self, source: ChunkSource | None = None, *, buffer_limit: int = 0) -> None:
        self._source = source
        self._buffer_limit = buffer_limit
        self._buffered: list[bytes] = []
        self._buffered_size = 0
        self._complete = source is None
        self.replayable = True
        self.trailers: Headers = []
        self.bytes_read = 0
        self._iterations = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> Body:
        body = cls()
        if data:
            body._buffered = [data]
            body._buffered_size = len(data)
            body.bytes_read = len(data)
        return body

    @property
    def complete(self) -> bool:
        return self._complete

    async def _next_from_source(self) -> bytes:
        if self._complete or self._source is None:
            self._complete = True
            return b""
        chunk = await self._source()
        if not chunk:
            self._complete = True
            return b""
        self.bytes_read += len(chunk)
        if self.replayable:
            if self._buffered_size + len(chunk) <= self._buffer_limit:
                self._buffered.append(chunk)
                self._buffered_size += len(chunk)
            else:
                self.replayable = False
                self._buffered.clear()
                self._buffered_size = 0
        return chunk

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Every chunk from the start: first what is buffered, then the rest of the source.

        Iterate it inside ``contextlib.aclosing`` so an abandoned iteration is closed promptly.

        A second call replays the buffer; calling it again after the body stopped being replayable
        raises, because the bytes already sent upstream are gone.
        """
        if self._iterations and not self.replayable:
            raise BodyNotReplayable("request body larger than the replay buffer was already streamed")
        self._iterations += 1
        for chunk in list(self._buffered):
            yield chunk
        while True:
            chunk = await self._next_from_source()
            if not chunk:
                return
            yield chunk

    async def read_all(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (raises BodyTooLarge beyond)."""
        parts: list[bytes] = []
        size = 0
        async with aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body over {limit} bytes")
                parts.append(chunk)
        return b"".join(parts)


class BodyNotReplayable(Exception):
    """A retry or mirror asked for a body whose start has already left the buffer."""


class BodyTooLarge(Exception):
    """A buffered read exceeded its limit."""


@attrs.define(kw_only=True)
class Request:
    """An HTTP request as the router and filters see it, whatever the wire protocol was."""

    method: bytes
    path: bytes
    authority: bytes
    headers: Headers = attrs.field(factory=list)
    scheme: bytes = b"http"
    protocol: str = "HTTP/1.1"
    body: Body = attrs.field(factory=Body)

    def header(self, name: bytes) -> bytes | None:
        return header_value(self.headers, name)


@attrs.define(kw_only=True)
class Response:
    """An HTTP response; ``body`` streams, trailers (gRPC status) travel on the body."""

    status: int
    headers: Headers = attrs.field(factory=list)
    body: Body = attrs.field(factory=Body)
    response_flags: str = "-"

    def header(self, name: bytes) -> bytes | None:
        return header_value(self.headers, name)


def local_response(status: int, text: str, *, flags: str = "-", extra: Headers | None = None) -> Response:
    """A response the proxy answers itself (404 NR, 503 UH, 403 RBAC …), like Envoy's local replies."""
    data = text.encode()
    headers: Headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(data)).encode()),
        *(extra or []),
    ]
    return Response(status=status, headers=headers, body=Body.from_bytes(data), response_flags=flags)
