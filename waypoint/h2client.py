"""HTTP/2 (prior-knowledge h2c) towards upstreams: many requests multiplexed on one connection.

:class:`Http2ClientConnection` mirrors :class:`waypoint.http1.Http1ClientConnection`:
``await conn.request(request)`` returns a :class:`~waypoint.messages.Response` whose body streams and
carries the trailers. Unlike HTTP/1.1 the connection needs a reader running, so it is driven by
:meth:`Http2ClientConnection.run` in the pool's nursery (or by :func:`open_http2_client`).

Each request body is sent by a task of the connection's own, so a response can start (and gRPC can
stream both ways) before the request body is complete. Pools read :attr:`available` and
:attr:`max_concurrent`; after the upstream's GOAWAY no new stream starts, streams at or below its
``last_stream_id`` finish, and those above it fail with :class:`UpstreamRefused` (safe to retry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from functools import partial

import h2.errors
import h2.events
import structlog
import trio

from waypoint.h2connection import MAX_CONCURRENT_STREAMS, H2Engine, H2Stream
from waypoint.h2core import goaway_frame, h2_safe_headers, split_pseudo
from waypoint.h2errors import (
    Http2Error,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamReset,
    error_name,
)
from waypoint.messages import Body, ChunkSource, Headers, Request, Response

log = structlog.get_logger("waypoint.http2")

_REFUSALS = (h2.errors.ErrorCodes.REFUSED_STREAM,)


class UpstreamBody(Body):
    """A response body streaming from an upstream HTTP/2 stream.

    Whoever drops it before the end must call :meth:`abandon`: otherwise the upstream stream stays
    open and its unread DATA keeps holding the connection's flow-control window.
    :func:`~waypoint.h2server.serve_http2` does so for the responses it relays.
    """

    def __init__(self, source: ChunkSource, on_abandon: Callable[[], None]) -> None:
        super().__init__(source)
        self._on_abandon: Callable[[], None] | None = on_abandon

    def abandon(self) -> None:
        """Reset the upstream stream (CANCEL) unless the body was read to its end. Idempotent."""
        on_abandon, self._on_abandon = self._on_abandon, None
        if on_abandon is not None and not self.complete:
            on_abandon()


class Http2ClientConnection(H2Engine):
    """One upstream HTTP/2 connection; run :meth:`run` in a nursery, then call :meth:`request`."""

    client_side = True

    def __init__(
        self, stream: trio.abc.Stream, *, peer: str = "", max_streams: int = MAX_CONCURRENT_STREAMS
    ) -> None:
        super().__init__(stream, peer=peer)
        self._max_streams = max_streams
        self._slot_lot = trio.lowlevel.ParkingLot()
        self.requests_sent = 0
        self._received_any = False

    # -- what a pool reads --

    @property
    def max_concurrent(self) -> int:
        """Streams this connection may carry at once: the upstream's limit, capped by ours."""
        return min(int(self.h2.remote_settings.max_concurrent_streams), self._max_streams)

    @property
    def open_streams(self) -> int:
        return int(self.h2.open_outbound_streams)

    @property
    def usable(self) -> bool:
        """Not failed and not told to go away: new streams may still start here."""
        return self.failure is None and not self.goaway_received

    @property
    def available(self) -> bool:
        """A new request would start at once (usable and below the stream limit)."""
        return self.usable and self.open_streams < self.max_concurrent

    # -- engine hooks --

    def stream_error(self, stream_id: int, code: int) -> Http2Error:
        kind = UpstreamRefused if code in _REFUSALS else UpstreamReset
        return kind(f"upstream reset HTTP/2 stream {stream_id}", stream_id=stream_id, code=error_name(code))

    def connection_error(self, reason: str) -> Http2Error:
        if self.protocol_error is not None:
            return UpstreamProtocolError(f"HTTP/2 connection to {self.peer} failed", reason=reason)
        return UpstreamConnectionLost(f"HTTP/2 connection to {self.peer} ended", reason=reason)

    def on_headers(self, event: h2.events.RequestReceived | h2.events.ResponseReceived) -> None:
        if not isinstance(event, h2.events.ResponseReceived) or event.stream_id is None:
            return
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.headers = list(event.headers or [])
            stream.headers_arrived.set()

    def on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        super().on_goaway(event)
        last = event.last_stream_id if event.last_stream_id is not None else 0
        code = int(event.error_code or 0)
        log.info("http2_upstream_goaway", peer=self.peer, code=error_name(code), last_stream_id=last)
        if code != h2.errors.ErrorCodes.NO_ERROR:
            self.fail(f"upstream sent GOAWAY {error_name(code)}")
            return
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:  # never processed: fail it as refused (retriable), stop its body
                stream.on_reset(h2.errors.ErrorCodes.REFUSED_STREAM)
                self.streams.pop(stream_id, None)
                stream.release()
                if stream.cancel_scope is not None:
                    stream.cancel_scope.cancel()
        self._slot_lot.unpark_all()
        if not self.streams:
            self.close_when_flushed()

    def fail(self, reason: str, *, flush: bool = False) -> None:
        super().fail(reason, flush=flush)
        self._slot_lot.unpark_all()

    def _dispatch(self, event: h2.events.Event) -> None:
        super()._dispatch(event)
        if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.RemoteSettingsChanged):
            self._slot_lot.unpark_all()

    def _receive(self, data: bytes) -> bool:
        if not self._received_any:
            self._received_any = True
            if data.startswith(b"HTTP/1."):
                # h2 would wait for megabytes of a "frame" whose length is the text "HTT".
                self.protocol_error = h2.errors.ErrorCodes.PROTOCOL_ERROR
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                self.fail(f"it answered with HTTP/1.x ({line!r})")
                return False
        return super()._receive(data)

    def _forget(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        self._slot_lot.unpark_all()
        if self.goaway_received and not self.streams:
            self.close_when_flushed()

    # -- requests --

    async def _wait_for_slot(self) -> None:
        if self._nursery is None and self.failure is None:
            raise RuntimeError(
                "start Http2ClientConnection.run() (or use open_http2_client) before request()"
            )
        while True:
            if self.failure is not None:
                raise self.failure
            if self.goaway_received:
                raise UpstreamRefused(
                    f"HTTP/2 connection to {self.peer} is going away", stream_id="(new)", code="GOAWAY"
                )
            if self.open_streams < self.max_concurrent:
                return
            await self._slot_lot.park()

    async def request(self, request: Request) -> Response:
        """Send ``request`` (its body from the start) and return once the response headers arrive."""
        await self._wait_for_slot()
        stream_id = self.h2.get_next_available_stream_id()
        head: Headers = [
            (b":method", request.method),
            (b":scheme", request.scheme),
            (b":authority", request.authority),
            (b":path", request.path),
            *h2_safe_headers(request.headers, keep_te_trailers=True),
        ]
        content_type = request.header(b"content-type") or b""
        if content_type.startswith(b"application/grpc") and not any(k == b"te" for k, _ in head):
            # gRPC servers insist on it, and an HTTP/1.1 hop on the way may have dropped it.
            head.append((b"te", b"trailers"))
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        body = request.body
        no_body = body.complete and body.bytes_read == 0 and not body.trailers
        self.requests_sent += 1
        try:
            await self.send_headers(stream_id, head, end_stream=no_body)
            if not no_body:
                stream.cancel_scope = trio.CancelScope()
                self.start_soon(self._send_body, stream, body)
            await stream.headers_arrived.wait()
        except BaseException:
            self.reset(stream_id, h2.errors.ErrorCodes.CANCEL)
            raise
        if stream.headers is None:
            self._forget(stream)
            if stream.error is not None:
                raise stream.error
            if stream.reset_code is not None:
                raise self.stream_error(stream_id, stream.reset_code)
            raise self.failure or self.connection_error("no response")
        return self._response(stream)

    def _response(self, stream: H2Stream) -> Response:
        pseudo, headers = split_pseudo(stream.headers or [])
        try:
            status = int(pseudo.get(b":status", b""))
        except ValueError as exc:
            self.reset(stream.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            raise UpstreamProtocolError(
                f"HTTP/2 response from {self.peer} has no valid :status", reason=repr(pseudo.get(b":status"))
            ) from exc
        if stream.drained:
            self._forget(stream)
            return Response(status=status, headers=headers, body=Body())

        async def read_chunk() -> bytes:
            try:
                chunk = await stream.read_chunk()
            except BaseException:
                self._forget(stream)
                raise
            if not chunk:
                response_body.trailers = stream.trailers
                self._forget(stream)
            return chunk

        abandon = partial(self.reset, stream.stream_id, h2.errors.ErrorCodes.CANCEL)
        response_body = UpstreamBody(read_chunk, abandon)
        return Response(status=status, headers=headers, body=response_body)

    async def _send_body(self, stream: H2Stream, body: Body) -> None:
        """Stream the request body; a failure resets the upstream stream and is reported to the caller."""
        stream_id = stream.stream_id
        scope = stream.cancel_scope
        assert scope is not None
        with scope:
            try:
                async with aclosing(body.chunks()) as chunks:
                    async for chunk in chunks:
                        await self.send_data(stream_id, chunk)
                trailers = h2_safe_headers(body.trailers, keep_te_trailers=False)
                if trailers:
                    await self.send_headers(stream_id, trailers, end_stream=True)
                else:
                    await self.end_stream(stream_id)
            except Exception as exc:
                if stream.reset_code is not None or self.failure is not None:
                    return  # the upstream side broke; the response side reports that
                log.info("http2_request_body_failed", peer=self.peer, stream_id=stream_id, error=str(exc))
                stream.fail(exc)
                self.reset(stream_id, h2.errors.ErrorCodes.CANCEL)

    async def aclose(self) -> None:
        """Say GOAWAY and end the connection now."""
        if self.failure is None:
            self.send_raw(goaway_frame(0))
        self.fail("closed locally", flush=True)
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_http2_client(
    stream: trio.abc.Stream, *, peer: str = ""
) -> AsyncIterator[Http2ClientConnection]:
    """An :class:`Http2ClientConnection` driven for the block's duration, then closed."""
    connection = Http2ClientConnection(stream, peer=peer)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)
        try:
            yield connection
        finally:
            await connection.aclose()
