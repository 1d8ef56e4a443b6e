"""The trio driver shared by the waypoint's HTTP/2 server and client (the app protocol *inside* a tunnel).

One :class:`H2Engine` owns one ``h2`` connection and its byte stream. Its tasks live in the nursery of
:meth:`H2Engine.run`:

* the **reader** feeds bytes to h2 and routes events to :class:`H2Stream` buffers; it never writes to
  the socket, so two peers both sending bulk data cannot deadlock each other;
* the **writer** is the only task that calls ``send_all`` (``trio.SSLStream`` forbids concurrent sends,
  and an HBONE tunnel stream is no different); every other task appends h2's output with :meth:`kick`;
* subclasses add their own tasks (one per request stream on the server, one body sender per request on
  the client) through :meth:`H2Engine.start_soon`, so nothing outlives the connection.

Received DATA is acknowledged to the peer only when the consumer takes it from :meth:`H2Stream.read_chunk`:
a slow upstream therefore slows the downstream sender instead of growing a buffer in the waypoint.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import structlog
import trio

from waypoint.h2core import (
    ends_with_goaway,
    goaway_frame,
    goaway_with_code,
    is_hpack_failure,
    keep_streams_after_goaway,
    trailers_problem,
)
from waypoint.h2errors import Http2Error, error_name
from waypoint.messages import Headers

log = structlog.get_logger("waypoint.http2")

STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 64 * 1024
RECEIVE_SIZE = 256 * 1024
WRITE_HIGH_WATER = 1024 * 1024
"""Senders park while this much output waits for the socket: bounds memory per connection."""

CLOSE_FLUSH_TIMEOUT = 5.0
"""How long a closing connection waits for a peer that does not read its last frames."""

_DEFAULT_WINDOW = 65535


# -- streams --------------------------------------------------------------------------------------------


class H2Stream:
    """Receive side of one HTTP/2 stream: DATA buffered as it arrives, acknowledged as it is consumed."""

    def __init__(self, engine: H2Engine, stream_id: int) -> None:
        self.engine = engine
        self.stream_id = stream_id
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._unacked = 0
        self._wakeup = trio.Event()
        self.ended = False
        self.trailers: Headers = []
        self.reset_code: int | None = None
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.headers_arrived = trio.Event()
        self.cancel_scope: trio.CancelScope | None = None
        self.error: Exception | None = None

    @property
    def drained(self) -> bool:
        """Ended cleanly with nothing left to read (a request without a body)."""
        return self.ended and not self._chunks and self.reset_code is None

    def _wake(self) -> None:
        self._wakeup.set()

    def on_data(self, data: bytes, flow_length: int) -> None:
        self._chunks.append((data, flow_length))
        self._unacked += flow_length
        self._wake()

    def on_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.trailers = [(k, v) for k, v in trailers if not k.startswith(b":")]

    def on_end(self) -> None:
        self.ended = True
        self._wake()

    def on_reset(self, code: int) -> None:
        if self.reset_code is None:
            self.reset_code = code
        self._wake()
        self.headers_arrived.set()

    def fail(self, error: Exception) -> None:
        """Our own side broke the stream (e.g. the request body could not be read): report ``error``."""
        if self.error is None:
            self.error = error
        self._wake()
        self.headers_arrived.set()

    def on_connection_lost(self) -> None:
        self._wake()
        self.headers_arrived.set()

    def release(self) -> None:
        """Return unread DATA's share of the connection window (the consumer will not read it)."""
        self._chunks.clear()
        if self._unacked:
            self.engine.acknowledge(self.stream_id, self._unacked)
            self._unacked = 0

    async def read_chunk(self) -> bytes:
        """Next DATA payload; ``b""`` at end of stream. Raises if the stream or connection broke."""
        while True:
            if self._chunks:
                data, flow_length = self._chunks.popleft()
                if flow_length:
                    self._unacked -= flow_length
                    self.engine.acknowledge(self.stream_id, flow_length)
                if data:
                    return data
                continue
            if self.error is not None:
                raise self.error
            if self.reset_code is not None:
                raise self.engine.stream_error(self.stream_id, self.reset_code)
            if self.ended:
                return b""
            failure = self.engine.failure
            if failure is not None:
                raise failure
            self._wakeup = trio.Event()
            await self._wakeup.wait()


# -- the connection driver ------------------------------------------------------------------------------


class H2Engine:
    """One HTTP/2 connection over a trio stream; subclassed by the server and the client."""

    client_side = False
    validate_inbound_headers = True
    """The server turns this off and validates request heads itself (a stream error, not GOAWAY)."""

    def __init__(self, transport: trio.abc.Stream, *, peer: str = "") -> None:
        self.transport = transport
        self.peer = peer
        config = h2.config.H2Configuration(
            client_side=self.client_side,
            header_encoding=None,
            validate_inbound_headers=self.validate_inbound_headers,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        settings: dict[h2.settings.SettingCodes, int] = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if not self.client_side:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = MAX_CONCURRENT_STREAMS
        self.h2.local_settings = h2.settings.Settings(client=self.client_side, initial_values=settings)
        self.h2.max_inbound_frame_size = MAX_FRAME_SIZE
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        keep_streams_after_goaway(self.h2)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self.streams: dict[int, H2Stream] = {}
        self.failure: Http2Error | None = None
        self.goaway_received = False
        self.protocol_error: int | None = None
        self._window_lot = trio.lowlevel.ParkingLot()
        self._writable_lot = trio.lowlevel.ParkingLot()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._write_wanted = trio.Event()
        self._close_when_flushed = False
        self._sending = False
        self._nursery: trio.Nursery | None = None
        self.kick()

    # -- hooks for the subclasses --

    def stream_error(self, stream_id: int, code: int) -> Http2Error:
        raise NotImplementedError

    def connection_error(self, reason: str) -> Http2Error:
        raise NotImplementedError

    def on_headers(self, event: h2.events.RequestReceived | h2.events.ResponseReceived) -> None:
        raise NotImplementedError

    def on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway_received = True

    # -- output --

    def send_raw(self, data: bytes) -> None:
        """Queue bytes built outside h2 (a graceful GOAWAY) behind h2's pending output."""
        self.kick()
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        self._write_wanted.set()

    def kick(self) -> None:
        """Move h2's pending output to the writer (never blocks)."""
        data = self.h2.data_to_send()
        if data:
            self._outbox.append(data)
            self._outbox_bytes += len(data)
            self._write_wanted.set()

    def acknowledge(self, stream_id: int, length: int) -> None:
        if self.failure is None:
            self.h2.acknowledge_received_data(length, stream_id)
            self.kick()

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """RST_STREAM ``stream_id`` unless it is already closed; its receive buffer is released.

        Whoever still waits on the stream is woken with the reset, and the task working on it (its
        ``cancel_scope``) is cancelled.
        """
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.on_reset(code)
            stream.release()
            if stream.cancel_scope is not None:
                stream.cancel_scope.cancel()
        if self.failure is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, code)
            self.kick()

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool = False) -> None:
        self._raise_if_failed()
        await self._wait_writable()
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.StreamClosedError as exc:
            raise self.stream_error(stream_id, self._reset_code_of(stream_id)) from exc
        self.kick()

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send ``data`` within the peer's flow-control windows, one frame per window-sized slice."""
        offset = 0
        total = len(data)
        while offset < total:
            self._raise_if_failed()
            await self._wait_writable()
            try:
                window = self.h2.local_flow_control_window(stream_id)
            except h2.exceptions.StreamClosedError as exc:
                raise self.stream_error(stream_id, self._reset_code_of(stream_id)) from exc
            if window <= 0:
                await self._window_lot.park()
                continue
            size = min(window, self.h2.max_outbound_frame_size, total - offset)
            last = offset + size >= total
            self.h2.send_data(stream_id, data[offset : offset + size], end_stream=end_stream and last)
            offset += size
            self.kick()
        if total == 0 and end_stream:
            await self.end_stream(stream_id)

    async def end_stream(self, stream_id: int) -> None:
        self._raise_if_failed()
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.StreamClosedError as exc:
            raise self.stream_error(stream_id, self._reset_code_of(stream_id)) from exc
        self.kick()
        await trio.lowlevel.checkpoint()

    def _reset_code_of(self, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.reset_code is not None:
            return stream.reset_code
        return h2.errors.ErrorCodes.STREAM_CLOSED

    async def _wait_writable(self) -> None:
        if self._outbox_bytes > WRITE_HIGH_WATER and self.failure is None:
            await self._writable_lot.park()

    async def _writer(self) -> None:
        while True:
            await self._write_wanted.wait()
            self._write_wanted = trio.Event()
            while self._outbox:
                data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
                self._outbox = []
                self._outbox_bytes = 0
                self._sending = True
                await self.transport.send_all(data)
                self._sending = False
            self._writable_lot.unpark_all()
            if self._close_when_flushed:
                self.cancel()
                return

    def close_when_flushed(self) -> None:
        """End the connection once everything queued so far is on the wire.

        Cancelling the writer in the middle of ``send_all`` could cut a frame in half, so graceful
        endings (all streams done after a GOAWAY) go through the writer instead.
        """
        if self._close_when_flushed:
            return
        self._close_when_flushed = True
        self._write_wanted.set()
        if self._nursery is not None:
            self._nursery.start_soon(self._cancel_after, CLOSE_FLUSH_TIMEOUT)

    async def _cancel_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.cancel()

    # -- lifecycle --

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("the HTTP/2 connection is not running")
        self._nursery.start_soon(fn, *args)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the connection until it ends; the transport is closed on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer_guarded)
                task_status.started()
        finally:
            self._nursery = None
            self.fail("closed")
            await self._final_flush()
            await trio.aclose_forcefully(self.transport)

    def cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def fail(self, reason: str, *, flush: bool = False) -> None:
        """The connection is over: wake every waiter with the error and stop the tasks.

        With ``flush`` the tasks stop only once the queued output (a GOAWAY) is written.
        """
        if self.failure is None:
            self.failure = self.connection_error(reason)
        for stream in list(self.streams.values()):
            stream.on_connection_lost()
        self._window_lot.unpark_all()
        self._writable_lot.unpark_all()
        if flush:
            self.close_when_flushed()
        else:
            self.cancel()

    async def _final_flush(self) -> None:
        """Best effort to get a GOAWAY or RST_STREAM out before the socket closes.

        Not if the writer was cancelled inside ``send_all``: part of a frame may be out, and anything
        sent after it would be garbage to the peer (trio leaves such a stream in an unknown state).
        """
        self.kick()
        if not self._outbox or self._sending:
            return
        data, self._outbox = b"".join(self._outbox), []
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
            ):
                await self.transport.send_all(data)

    async def _writer_guarded(self) -> None:
        try:
            await self._writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(f"write failed: {exc!r}")

    async def _reader(self) -> None:
        try:
            while True:
                data = await self.transport.receive_some(RECEIVE_SIZE)
                if not data:
                    self.on_eof()
                    return
                if not self._receive(bytes(data)):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.fail(f"read failed: {exc.__cause__ or exc!r}")

    def on_eof(self) -> None:
        self.fail("peer closed the connection")

    def _receive(self, data: bytes) -> bool:
        """Feed bytes to h2; False once a connection error ended the connection (GOAWAY queued)."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = int(getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR))
            pending = self.h2.data_to_send()
            if is_hpack_failure(exc):
                code = h2.errors.ErrorCodes.COMPRESSION_ERROR
                pending = goaway_with_code(pending, code)
            if not ends_with_goaway(pending):
                pending += goaway_frame(self.h2.highest_inbound_stream_id, code)
            self._outbox.append(pending)
            self._outbox_bytes += len(pending)
            self.protocol_error = code
            log.info("http2_protocol_error", peer=self.peer, code=error_name(code), error=str(exc))
            self.fail(f"HTTP/2 protocol error {error_name(code)}: {exc}", flush=True)
            return False
        for event in events:
            self._dispatch(event)
        self.kick()
        return True

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                if event.flow_controlled_length:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream.on_data(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.RequestReceived | h2.events.ResponseReceived):
            self.on_headers(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            trailers = list(event.headers or [])
            problem = trailers_problem(trailers)
            if problem is not None and event.stream_id is not None:
                log.info("http2_malformed_trailers", peer=self.peer, stream_id=event.stream_id, error=problem)
                self.reset(event.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            elif stream is not None:
                stream.on_trailers(trailers)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_reset(int(event.error_code))
                if stream.cancel_scope is not None:
                    stream.cancel_scope.cancel()
            self._window_lot.unpark_all()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_lot.unpark_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.on_goaway(event)
