"""One HBONE tunnel = one HTTP/2 stream, exposed as a :class:`trio.abc.HalfCloseableStream`.

So a proxy can copy between a TCP socket and a tunnel with the same code it uses for two sockets:
``send_eof`` is END_STREAM, ``aclose`` before both sides finished is RST_STREAM(CANCEL), and a reset
from the peer surfaces as :class:`~meshcore.hbone.errors.StreamReset` so the proxy resets TCP too.

Flow control is what makes the tunnel back-pressure end to end: received data is acknowledged to h2
(opening the HTTP/2 windows again) only when ``receive_some`` hands it to the consumer. A copy loop
asks for the next chunk only after forwarding the previous one, so at most one chunk beyond the
window is ever in flight, and a slow destination slows the source instead of filling our memory.
"""

from __future__ import annotations

import operator
from collections import deque
from typing import TYPE_CHECKING, Protocol

import h2.errors
import h2.exceptions
import trio
from h2.connection import H2Connection

from meshcore.hbone.errors import ConnectionLost, StreamReset

if TYPE_CHECKING:
    from meshcore.hbone.connect import ConnectResponse


class StreamHost(Protocol):
    """What a stream needs from the connection that carries it (see :mod:`meshcore.hbone.connection`)."""

    @property
    def h2(self) -> H2Connection: ...

    peer: str
    window_lot: trio.lowlevel.ParkingLot

    def kick(self) -> None: ...

    async def wait_writable(self) -> None: ...

    def forget(self, stream_id: int) -> None: ...

    def failure(self) -> ConnectionLost | None: ...


class HboneStream(trio.abc.HalfCloseableStream):
    """A tunnel's byte stream. Created by the connection; do not construct directly."""

    def __init__(self, host: StreamHost, stream_id: int) -> None:
        self._host = host
        self.stream_id = stream_id
        self._chunks: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled length)
        self._offset = 0  # consumed bytes of _chunks[0]
        self._lot = trio.lowlevel.ParkingLot()
        self._eof_received = False
        self._eof_sent = False
        self._closed = False
        self._reset_code: int | None = None
        self._receiving = False
        self._sending = False
        self.response: ConnectResponse | None = None
        self.response_arrived = trio.Event()
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- called by the connection's reader task (synchronously, never blocking) --

    def on_data(self, data: bytes, flow_controlled_length: int) -> None:
        if self._closed:
            self._ack(flow_controlled_length)
            return
        self._chunks.append((data, flow_controlled_length))
        self._lot.unpark_all()

    def on_end(self) -> None:
        self._eof_received = True
        self._lot.unpark_all()

    def on_reset(self, error_code: int) -> None:
        if self._reset_code is None:
            self._reset_code = error_code
        self.response_arrived.set()
        self._lot.unpark_all()

    def on_connection_lost(self) -> None:
        self.response_arrived.set()
        self._lot.unpark_all()

    @property
    def finished(self) -> bool:
        """Both directions ended cleanly, or the stream was reset: nothing more will flow."""
        return (self._eof_sent and self._eof_received) or self._reset_code is not None

    # -- the trio stream interface --

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this tunnel")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("tunnel stream was closed locally")
                if self._chunks:
                    data = self._take(max_bytes)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                self._raise_if_broken()
                if self._eof_received:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return b""
                await self._lot.park()
        finally:
            self._receiving = False

    def _take(self, max_bytes: int | None) -> bytes:
        data, flow_len = self._chunks[0]
        remaining = len(data) - self._offset
        n = remaining if max_bytes is None else min(max_bytes, remaining)
        piece = data if (self._offset == 0 and n == len(data)) else data[self._offset : self._offset + n]
        self._offset += n
        ack = n
        if self._offset >= len(data):
            self._chunks.popleft()
            self._offset = 0
            ack += flow_len - len(data)  # padding counts against the window too
        self.bytes_received += n
        self._ack(ack)
        return piece

    def _ack(self, n: int) -> None:
        if n <= 0 or self._host.failure() is not None:
            return
        try:
            self._host.h2.acknowledge_received_data(n, self.stream_id)
        except h2.exceptions.ProtocolError:
            return
        self._host.kick()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this tunnel")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            conn = self._host.h2
            if self._closed or self._eof_sent:
                raise trio.ClosedResourceError("tunnel stream was closed or half-closed locally")
            while len(view):
                if self._closed or self._eof_sent:
                    raise trio.ClosedResourceError("tunnel stream was closed or half-closed locally")
                self._raise_if_broken()
                try:
                    window = conn.local_flow_control_window(self.stream_id)
                except h2.exceptions.StreamClosedError:
                    raise self._reset_error(h2.errors.ErrorCodes.STREAM_CLOSED) from None
                if window <= 0:
                    await self._host.window_lot.park()
                    continue
                n = min(window, len(view), conn.max_outbound_frame_size)
                try:
                    conn.send_data(self.stream_id, view[:n])  # serialized at once: no copy needed
                except h2.exceptions.StreamClosedError:
                    raise self._reset_error(h2.errors.ErrorCodes.STREAM_CLOSED) from None
                view = view[n:]
                self.bytes_sent += n
                self._host.kick()
                # Socket back-pressure: the connection parks us while too much is queued to write.
                await self._host.wait_writable()
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("tunnel stream was closed locally")
        while not self._closed and self._reset_code is None and self._host.failure() is None:
            if self._host.h2.local_flow_control_window(self.stream_id) > 0:
                break
            await self._host.window_lot.park()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """Half-close: END_STREAM on an empty DATA frame; the peer may keep sending."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("tunnel stream was closed locally")
        if self._eof_sent:
            return
        self._raise_if_broken()
        self._eof_sent = True
        try:
            self._host.h2.end_stream(self.stream_id)
        except h2.exceptions.StreamClosedError:
            raise self._reset_error(h2.errors.ErrorCodes.STREAM_CLOSED) from None
        self._host.kick()

    def send_response(self, headers: list[tuple[str, str]], *, final: bool) -> None:
        """Server side: answer the request. ``final`` ends the stream with this header block and, if
        the client is still sending, asks it to stop with RST_STREAM(NO_ERROR) (RFC 9113 §8.1)."""
        if self._host.failure() is not None or self._reset_code is not None:
            return
        try:
            self._host.h2.send_headers(self.stream_id, headers, end_stream=final)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if final:
            self._eof_sent = True
            if not self._eof_received:
                self._send_reset(h2.errors.ErrorCodes.NO_ERROR)
        self._host.kick()

    async def aclose(self) -> None:
        """Release the stream; RST_STREAM(CANCEL) unless both directions already finished."""
        self.close_now(h2.errors.ErrorCodes.CANCEL)
        await trio.lowlevel.checkpoint()

    async def reset(self, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abort the tunnel with RST_STREAM(``error_code``): how a TCP RST is passed on."""
        if not self._closed and self._reset_code is None:
            self._send_reset(error_code)
        await self.aclose()

    def close_now(self, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Synchronous close for cleanup paths that cannot await."""
        if self._closed:
            return
        if not self.finished and self._host.failure() is None:
            self._send_reset(error_code)
        self._closed = True
        # Unread data still occupies the connection window: give it back.
        unread = sum(flow for _, flow in self._chunks) - self._offset
        self._chunks.clear()
        self._offset = 0
        self._ack(unread)
        self._host.forget(self.stream_id)
        self._lot.unpark_all()

    def _send_reset(self, error_code: int) -> None:
        self._reset_code = error_code
        try:
            self._host.h2.reset_stream(self.stream_id, error_code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._host.kick()

    def _raise_if_broken(self) -> None:
        if self._reset_code is not None:
            raise self._reset_error(self._reset_code)
        failure = self._host.failure()
        if failure is not None:
            raise ConnectionLost(failure.message, **failure.context)

    def _reset_error(self, code: int) -> StreamReset:
        return StreamReset(
            f"tunnel stream {self.stream_id} to {self._host.peer} was reset ({_code_name(code)})",
            error_code=int(code),
        )


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)
