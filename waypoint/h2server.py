"""HTTP/2 (prior-knowledge h2c) on the downstream side of the waypoint.

:func:`serve_http2` mirrors :func:`waypoint.http1.serve_http1`: each request stream becomes a
protocol-neutral :class:`~waypoint.messages.Request` handed to the same handler, and the handler's
:class:`~waypoint.messages.Response` goes back with its streaming body and trailers (gRPC's
``grpc-status``). Streams run concurrently, each in its own task in the connection's nursery.

Errors stay as small as the protocol allows: a connection error (bad preface, malformed frame, HPACK
failure, flow-control violation) is answered with GOAWAY carrying the code h2 names and ends *this*
connection only; a reset or failure of one stream touches only that stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing

import h2.errors
import h2.events
import structlog
import trio

from waypoint.h2connection import H2Engine, H2Stream
from waypoint.h2core import goaway_frame, h2_safe_headers, request_fields, request_head_problem
from waypoint.h2errors import DownstreamConnectionLost, DownstreamReset, Http2Error, error_name
from waypoint.messages import Body, Request, Response, local_response

log = structlog.get_logger("waypoint.http2")

REQUEST_BUFFER_LIMIT = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class Http2ServerConnection(H2Engine):
    """The server side of one downstream HTTP/2 connection."""

    client_side = False
    validate_inbound_headers = False

    def __init__(self, transport: trio.abc.Stream, handler: Handler, *, peer: str = "") -> None:
        super().__init__(transport, peer=peer)
        self._handler = handler
        self.requests_served = 0
        self.draining = False
        self._goaway_last_stream_id = 0

    def stream_error(self, stream_id: int, code: int) -> Http2Error:
        return DownstreamReset(
            f"downstream reset HTTP/2 stream {stream_id}", stream_id=stream_id, code=error_name(code)
        )

    def connection_error(self, reason: str) -> Http2Error:
        return DownstreamConnectionLost(f"downstream HTTP/2 connection from {self.peer} ended", reason=reason)

    def on_headers(self, event: h2.events.RequestReceived | h2.events.ResponseReceived) -> None:
        if not isinstance(event, h2.events.RequestReceived) or event.stream_id is None:
            return
        if self.draining and event.stream_id > self._goaway_last_stream_id:
            self.reset(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        raw_headers = list(event.headers or [])
        problem = request_head_problem(raw_headers)
        if problem is not None:
            log.info("http2_malformed_request", peer=self.peer, stream_id=event.stream_id, error=problem)
            self.reset(event.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        stream = H2Stream(self, event.stream_id)
        stream.cancel_scope = trio.CancelScope()
        self.streams[event.stream_id] = stream
        pseudo, headers = request_fields(raw_headers)
        body = Body(buffer_limit=REQUEST_BUFFER_LIMIT)
        request = Request(
            method=pseudo.get(b":method", b""),
            path=pseudo.get(b":path", b""),
            authority=pseudo.get(b":authority", b""),
            scheme=pseudo.get(b":scheme", b"http"),
            headers=headers,
            protocol="HTTP/2",
            body=body,
        )
        self.start_soon(self._serve_stream, stream, request)

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY(NO_ERROR), finish the streams in flight, then close."""
        if self.draining or self.failure is not None:
            return
        self.draining = True
        self._goaway_last_stream_id = self.h2.highest_inbound_stream_id
        self.send_raw(goaway_frame(self._goaway_last_stream_id))
        if not self.streams:
            self.close_when_flushed()

    def on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        # A client's GOAWAY means it opens no more streams; the ones in flight still get answers.
        super().on_goaway(event)
        code = int(event.error_code or 0)
        if code != h2.errors.ErrorCodes.NO_ERROR:
            self.fail(f"downstream sent GOAWAY {error_name(code)}")
        elif not self.streams:
            self.close_when_flushed()

    async def _serve_stream(self, stream: H2Stream, request: Request) -> None:
        stream_id = stream.stream_id

        async def read_chunk() -> bytes:
            chunk = await stream.read_chunk()
            if not chunk:
                request.body.trailers = stream.trailers
            return chunk

        if not stream.drained:
            request.body = Body(read_chunk, buffer_limit=REQUEST_BUFFER_LIMIT)
        scope = stream.cancel_scope
        assert scope is not None
        answered: list[Response] = []
        try:
            with scope:
                await self._answer(stream_id, request, answered)
        finally:
            # A relayed upstream body not read to its end (client reset, write failure, shutdown)
            # must release its upstream stream; duck-typed so any client can offer ``abandon``.
            for response in answered:
                abandon = getattr(response.body, "abandon", None)
                if abandon is not None:
                    abandon()
                release_unread = getattr(response.body, "release_unread", None)  # an HTTP/1.1 upstream's
                if release_unread is not None:
                    await release_unread()
        self.requests_served += 1
        self._finish(stream)

    async def _answer(self, stream_id: int, request: Request, answered: list[Response]) -> None:
        """Run the handler and write its answer; the response is recorded in ``answered`` at once."""
        try:
            response = await self._handler(request)
        except (DownstreamReset, DownstreamConnectionLost) as exc:
            log.info("http2_stream_failed", peer=self.peer, stream_id=stream_id, error=str(exc))
            self.reset(stream_id, h2.errors.ErrorCodes.CANCEL)
            return
        except Http2Error as exc:
            # An upstream failure the handler let through, before any response started: answer like
            # Envoy does, 503 with the flag, rather than a bare reset.
            log.info("http2_upstream_failed", peer=self.peer, stream_id=stream_id, error=str(exc))
            text = f"upstream connect error or disconnect/reset before headers: {exc.message}\n"
            response = local_response(503, text, flags=exc.response_flag)
        except Exception as exc:
            log.exception("http2_handler_failed", peer=self.peer, stream_id=stream_id)
            response = local_response(500, f"waypoint handler failed: {type(exc).__name__}\n")
        answered.append(response)
        try:
            await self._write_response(stream_id, response)
        except Http2Error as exc:
            log.info("http2_response_aborted", peer=self.peer, stream_id=stream_id, error=str(exc))
            self.reset(stream_id, h2.errors.ErrorCodes.CANCEL)
        except Exception:
            log.exception("http2_response_body_failed", peer=self.peer, stream_id=stream_id)
            self.reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def _finish(self, stream: H2Stream) -> None:
        """Forget a served stream; a request body still arriving is cut off with RST_STREAM(NO_ERROR)."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not stream.ended and stream.reset_code is None:
            self.reset(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        stream.release()
        if (self.goaway_received or self.draining) and not self.streams:
            self.close_when_flushed()

    async def _write_response(self, stream_id: int, response: Response) -> None:
        head = [
            (b":status", str(response.status).encode()),
            *h2_safe_headers(response.headers, keep_te_trailers=False),
        ]
        body = response.body
        if body.complete and body.bytes_read == 0 and not body.trailers:
            await self.send_headers(stream_id, head, end_stream=True)
            return
        await self.send_headers(stream_id, head)
        async with aclosing(body.chunks()) as chunks:
            async for chunk in chunks:
                await self.send_data(stream_id, chunk)
        trailers = h2_safe_headers(body.trailers, keep_te_trailers=False)
        if trailers:
            await self.send_headers(stream_id, trailers, end_stream=True)
        else:
            await self.end_stream(stream_id)


async def serve_http2(stream: trio.abc.Stream, handler: Handler, *, peer: str = "") -> None:
    """Serve prior-knowledge HTTP/2 on ``stream`` until the connection ends; never raises for bad input.

    The caller has already consumed nothing of the stream (or replays what it sniffed, see
    :func:`waypoint.h2sniff.sniff_stream`); the client preface is checked here.
    """
    connection = Http2ServerConnection(stream, handler, peer=peer)
    await connection.run()
