"""The trio driver of one HBONE HTTP/2 connection (client or server side) around ``h2``.

Three tasks per connection, owned by :meth:`HboneConnection.run`'s nursery:

* the **reader** feeds TLS bytes to h2 and dispatches events to streams without ever blocking on the
  socket's write side (if it did, two peers both sending bulk data could deadlock each other);
* the **writer** is the only task that calls ``send_all`` on the TLS stream (``trio.SSLStream``
  forbids concurrent sends); everyone else appends h2's output and :meth:`kick`\\ s it;
* the **keepalive** PINGs every 10 s and declares the connection dead after 20 s without an answer.

Settings (DESIGN §3) and h2 adjustments live in :mod:`meshcore.hbone.h2setup`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence

import h2.errors
import h2.events
import h2.exceptions
import structlog
import trio

from meshcore.h2compat import FrameLengthGuard
from meshcore.hbone.connect import parse_response
from meshcore.hbone.errors import ConnectionLost, StreamReset
from meshcore.hbone.h2setup import (
    CONNECTION_WINDOW,
    FLUSH_TIMEOUT,
    MAX_FRAME_SIZE,
    PING_INTERVAL,
    PING_TIMEOUT,
    RECEIVE_SIZE,
    SERVER_MAX_CONCURRENT_STREAMS,
    STREAM_WINDOW,
    WRITE_HIGH_WATER,
    new_h2_connection,
)
from meshcore.hbone.h2stream import HboneStream

log = structlog.get_logger("meshcore.hbone")

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_FRAME_SIZE",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "SERVER_MAX_CONCURRENT_STREAMS",
    "STREAM_WINDOW",
    "HboneConnection",
    "RequestCallback",
]

RequestCallback = Callable[[HboneStream, list[tuple[bytes, bytes]]], None]


class HboneConnection:
    """One HTTP/2 connection carrying HBONE tunnels over an already-handshaken TLS stream.

    Server side: pass ``on_request``; it is called synchronously for each new stream with the stream
    and its raw header block, and must hand the work to a task of its own.
    Client side: :meth:`open_stream`.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        client_side: bool,
        peer: str = "",
        on_request: RequestCallback | None = None,
    ) -> None:
        self._transport = transport
        self.client_side = client_side
        self.peer = peer
        self._on_request = on_request
        self.h2 = new_h2_connection(client_side)
        self._frame_guard = FrameLengthGuard(self.h2.max_inbound_frame_size, server_side=not client_side)
        self.streams: dict[int, HboneStream] = {}
        self.window_lot = trio.lowlevel.ParkingLot()
        self._writable_lot = trio.lowlevel.ParkingLot()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._write_wanted = trio.Event()
        self._pong = trio.Event()
        self._failure: ConnectionLost | None = None
        self._goaway_received = False
        self._closing = False
        self._reader_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._keepalive_scope = trio.CancelScope()
        self.streams_opened = 0
        self.responses_received = 0
        self.kick()

    # -- state the pool and streams read --

    def failure(self) -> ConnectionLost | None:
        return self._failure

    @property
    def usable(self) -> bool:
        """Can a new stream be opened here (not failed, not going away, not closing)?"""
        return self._failure is None and not self._goaway_received and not self._closing

    @property
    def open_streams(self) -> int:
        return len(self.streams)

    def remote_max_streams(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    # -- output --

    def kick(self) -> None:
        """Move h2's pending output to the writer (never blocks)."""
        data = self.h2.data_to_send()
        if data:
            self._outbox.append(data)
            self._outbox_bytes += len(data)
            self._write_wanted.set()

    async def wait_writable(self) -> None:
        if self._outbox_bytes > WRITE_HIGH_WATER and self._failure is None:
            await self._writable_lot.park()

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if (self._closing or self._goaway_received) and not self.streams:
            self._fail("drained")

    async def _writer(self) -> None:
        while True:
            if self._failure is not None and not self._outbox:
                return
            await self._write_wanted.wait()
            self._write_wanted = trio.Event()
            chunks, self._outbox = self._outbox, []
            self._outbox_bytes = 0
            if chunks:
                await self._transport.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            self._writable_lot.unpark_all()

    # -- lifecycle --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the connection until it ends; the transport is closed on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_in, self._reader_scope, self._reader)
                nursery.start_soon(self._run_in, self._writer_scope, self._writer_guarded)
                nursery.start_soon(self._run_in, self._keepalive_scope, self._keepalive)
                task_status.started()
        finally:
            self._fail("closed")
            await trio.aclose_forcefully(self._transport)

    @staticmethod
    async def _run_in(scope: trio.CancelScope, task: Callable[[], Awaitable[None]]) -> None:
        with scope:
            await task()

    def _fail(self, reason: str) -> None:
        """End the connection: wake every waiter, stop reading now, let the writer flush briefly.

        The writer is not cancelled outright: a cancelled ``SSLStream.send_all`` breaks the stream,
        and the GOAWAY/RST frames h2 just queued are what tell the peer why we are going.
        """
        if self._failure is None:
            self._failure = ConnectionLost(
                f"HBONE connection to {self.peer} ended", peer=self.peer, reason=reason
            )
        for stream in list(self.streams.values()):
            stream.on_connection_lost()
        self.window_lot.unpark_all()
        self._writable_lot.unpark_all()
        self._reader_scope.cancel()
        self._keepalive_scope.cancel()
        self._writer_scope.deadline = min(self._writer_scope.deadline, trio.current_time() + FLUSH_TIMEOUT)
        self._write_wanted.set()

    async def aclose(self, error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY and end the connection now (streams still open fail with ConnectionLost)."""
        if self._failure is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code)
            self.kick()
            self._fail("closed locally")
        await trio.lowlevel.checkpoint()

    def drain(self) -> None:
        """Stop taking new streams (GOAWAY NO_ERROR); the connection ends once open streams finish."""
        if self._closing or self._failure is not None:
            return
        self._closing = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.send_goaway_keep_open()  # streams already accepted may finish
        self.kick()
        if not self.streams:
            self._fail("drained")

    async def _writer_guarded(self) -> None:
        try:
            await self._writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(f"write failed: {exc!r}")

    async def _reader(self) -> None:
        try:
            while True:
                data = await self._transport.receive_some(RECEIVE_SIZE)
                if not data:
                    self._fail("peer closed the connection")
                    return
                oversize = self._frame_guard.oversize(data)
                if oversize is not None:
                    self._refuse_oversize_frame(oversize)
                    return
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("hbone_protocol_error", peer=self.peer, error=str(exc) or type(exc).__name__)
                    self.kick()  # h2 queued a GOAWAY
                    self._fail(f"HTTP/2 protocol error: {exc!s}")
                    return
                for event in events:
                    self._dispatch(event)
                self.kick()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(f"read failed: {exc.__cause__ or exc!r}")

    def _refuse_oversize_frame(self, length: int) -> None:
        """What h2 would do once the whole frame arrived — GOAWAY FRAME_SIZE_ERROR — but now."""
        limit = self._frame_guard.max_size
        log.warning("hbone_protocol_error", peer=self.peer, error=f"frame of {length} bytes exceeds {limit}")
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
        self.kick()
        self._fail(f"HTTP/2 protocol error: frame of {length} bytes exceeds the {limit}-byte limit")

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self._ack_orphan(event.flow_controlled_length, event.stream_id)
            else:
                stream.on_data(event.data, event.flow_controlled_length)
                if event.stream_ended is not None:
                    stream.on_end()
        elif isinstance(event, h2.events.RequestReceived):
            self._new_request(event)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            self.responses_received += 1
            if stream is not None:
                stream.response = parse_response(event.headers)
                stream.response_arrived.set()
                if event.stream_ended is not None:
                    stream.on_end()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_reset(int(event.error_code))
            self.window_lot.unpark_all()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window_lot.unpark_all()
        elif isinstance(event, h2.events.PingAckReceived):
            self._pong.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _ack_orphan(self, length: int, stream_id: int) -> None:
        # Data for a stream we already released: return its share of the connection window.
        if length:
            self.h2.acknowledge_received_data(length, stream_id)

    def _new_request(self, event: h2.events.RequestReceived) -> None:
        stream = HboneStream(self, event.stream_id)
        self.streams[event.stream_id] = stream
        if event.stream_ended is not None:
            stream.on_end()
        if self._on_request is None or self._closing:
            stream.close_now(h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._on_request(stream, list(event.headers or []))

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self._goaway_received = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id, stream in list(self.streams.items()):
            if event.error_code != h2.errors.ErrorCodes.NO_ERROR or (self.client_side and stream_id > last):
                stream.on_reset(h2.errors.ErrorCodes.REFUSED_STREAM)
        log.debug("hbone_goaway", peer=self.peer, error_code=str(event.error_code), last_stream_id=last)
        if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
            self._fail(f"peer sent GOAWAY {event.error_code!s}")
        elif not self.streams:
            self._fail("peer sent GOAWAY")

    async def _keepalive(self) -> None:
        counter = 0
        while True:
            await trio.sleep(PING_INTERVAL)
            counter += 1
            self._pong = trio.Event()
            self.h2.ping(counter.to_bytes(8, "big"))
            self.kick()
            with trio.move_on_after(PING_TIMEOUT) as scope:
                await self._pong.wait()
            if scope.cancelled_caught:
                log.warning("hbone_ping_timeout", peer=self.peer, timeout=PING_TIMEOUT)
                self._fail(f"no PING answer within {PING_TIMEOUT:g}s")
                return

    # -- client side --

    async def open_stream(self, headers: Sequence[tuple[str, str]]) -> HboneStream:
        """Send a request header block and wait for the response headers.

        Returns the stream with ``stream.response`` set (any status; the caller decides what a
        non-200 means). Raises ConnectionLost/StreamReset if the connection or stream fails first.
        """
        if not self.usable:
            failure = self._failure
            if failure is not None:
                raise ConnectionLost(failure.message, **failure.context)
            raise ConnectionLost(
                f"HBONE connection to {self.peer} is going away",
                peer=self.peer,
                reason="the peer sent GOAWAY",
            )
        try:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, list(headers))
        except (h2.exceptions.NoAvailableStreamIDError, h2.exceptions.TooManyStreamsError) as exc:
            # Stream IDs used up, or the peer lowered its stream limit: nothing was sent, so the pool
            # may retry elsewhere exactly as for a refused stream.
            self._closing = True
            raise StreamReset(
                f"HBONE connection to {self.peer} cannot open another stream ({type(exc).__name__})",
                error_code=h2.errors.ErrorCodes.REFUSED_STREAM,
            ) from exc
        stream = HboneStream(self, stream_id)
        self.streams[stream_id] = stream
        self.streams_opened += 1
        self.kick()
        try:
            await stream.response_arrived.wait()
            if stream.response is None:
                stream._raise_if_broken()
                raise ConnectionLost(
                    f"HBONE connection to {self.peer} ended",
                    peer=self.peer,
                    reason="it ended before the CONNECT was answered",
                )
        except BaseException:
            stream.close_now()
            raise
        return stream

    def statistics(self) -> dict[str, float]:
        return {
            "open_streams": len(self.streams),
            "streams_opened": self.streams_opened,
            "outbound_window": self.h2.outbound_flow_control_window,
            "queued_bytes": self._outbox_bytes,
        }
