"""serve_http2 on real loopback sockets: requests, streaming bodies, flow control, resets and hostile input.

Well-behaved traffic goes through the waypoint's own client; precise or broken frames come from a
raw ``h2``/``hyperframe`` peer so each test controls exactly what the server sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest
import trio
import trio.testing

from waypoint.h2connection import CLOSE_FLUSH_TIMEOUT
from waypoint.h2core import keep_streams_after_goaway
from waypoint.h2sniff import H2_PREFACE
from waypoint.http2 import (
    DownstreamReset,
    Http2ServerConnection,
    UpstreamConnectionLost,
    open_http2_client,
    serve_http2,
)
from waypoint.messages import Body, Request, Response, header_value

Handler = Callable[[Request], Awaitable[Response]]


async def echo(request: Request) -> Response:
    data = await request.body.read_all(64 << 20)
    body = Body.from_bytes(b"%s %s %s len=%d" % (request.method, request.path, request.authority, len(data)))
    body.trailers = [(b"x-request-trailer", header_value(request.body.trailers, b"x-sum") or b"none")]
    headers = [(b"x-protocol", request.protocol.encode()), (b"x-scheme", request.scheme)]
    headers += [(b"x-saw-" + name, value) for name, value in request.headers if name.startswith(b"x-")]
    return Response(status=200, headers=headers, body=body)


@asynccontextmanager
async def h2_server(handler: Handler = echo) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda stream: serve_http2(stream, handler), 0
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def get(port: int, path: bytes = b"/") -> Response:
    """One request on a fresh connection through the waypoint's own client; the body is read."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_http2_client(stream) as client:
        response = await client.request(Request(method=b"GET", path=path, authority=b"svc"))
        response.body = Body.from_bytes(await response.body.read_all(1 << 20))
        return response


class RawClient:
    """A bare h2 client over a loopback socket, for tests that need frame-level control."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.frames: list[hyperframe.frame.Frame] = []
        self._unparsed = b""

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawClient]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = cls(stream)
            await client.flush()
            yield client

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def wait_for(self, predicate: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        """Read until an event matching ``predicate`` arrives (fails after 10 s or at EOF)."""
        with trio.fail_after(10):
            while True:
                for index, event in enumerate(self.events):
                    if predicate(event):
                        del self.events[: index + 1]
                        return event
                self.events.clear()
                data = await self.stream.receive_some(65536)
                assert data, "server closed the connection"
                self._record_frames(data)
                self.events.extend(self.h2.receive_data(data))
                await self.flush()

    def _record_frames(self, data: bytes) -> None:
        self._unparsed += data
        while len(self._unparsed) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(self._unparsed[:9]))
            if len(self._unparsed) < 9 + length:
                return
            frame.parse_body(memoryview(self._unparsed[9 : 9 + length]))
            self.frames.append(frame)
            self._unparsed = self._unparsed[9 + length :]


def request_headers(path: bytes = b"/", method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"svc"), (b":path", path)]


async def test_request_fields_and_response_with_trailers() -> None:
    async with h2_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_http2_client(stream) as client:
            body = Body.from_bytes(b"abc")
            body.trailers = [(b"x-sum", b"42")]
            request = Request(
                method=b"POST", path=b"/p?q=1", authority=b"search:8080", headers=[(b"x-a", b"1")], body=body
            )
            response = await client.request(request)
            data = await response.body.read_all(1 << 20)
    assert response.status == 200
    assert data == b"POST /p?q=1 search:8080 len=3"
    assert header_value(response.headers, b"x-protocol") == b"HTTP/2"
    assert header_value(response.headers, b"x-scheme") == b"http"
    assert header_value(response.headers, b"x-saw-x-a") == b"1"
    assert response.body.trailers == [(b"x-request-trailer", b"42")]


async def test_many_concurrent_streams_on_one_connection_with_bodies_larger_than_the_windows() -> None:
    size = 3 * 1024 * 1024  # beyond the 1 MiB stream window: only consumption reopens it
    async with h2_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        results: dict[int, bytes] = {}
        async with open_http2_client(stream) as client:

            async def one(index: int) -> None:
                payload = Body.from_bytes(bytes([index]) * (size if index < 3 else index))
                response = await client.request(
                    Request(method=b"PUT", path=b"/%d" % index, authority=b"a", body=payload)
                )
                results[index] = await response.body.read_all(1 << 20)

            async with trio.open_nursery() as nursery:
                for index in range(20):
                    nursery.start_soon(one, index)
            assert client.requests_sent == 20
    for index in range(20):
        assert results[index] == b"PUT /%d a len=%d" % (index, size if index < 3 else index)


async def test_settings_advertise_windows_and_stream_limit() -> None:
    async with h2_server() as port, RawClient.connect(port) as raw:
        event = await raw.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert isinstance(event, h2.events.RemoteSettingsChanged)
        changed = {int(code): setting.new_value for code, setting in event.changed_settings.items()}
        assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
        assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 1024 * 1024
        await raw.wait_for(lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0)
        assert raw.h2.outbound_flow_control_window == 16 * 1024 * 1024


async def test_received_data_is_acknowledged_only_as_the_handler_consumes_it() -> None:
    called = trio.Event()
    release = trio.Event()

    async def slow_reader(request: Request) -> Response:
        called.set()
        await release.wait()
        data = await request.body.read_all(8 << 20)
        return Response(status=200, body=Body.from_bytes(b"%d" % len(data)))

    window = 1024 * 1024
    async with h2_server(slow_reader) as port, RawClient.connect(port) as raw:
        await raw.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        raw.h2.send_headers(1, request_headers(method=b"POST"))
        raw.h2.send_data(1, b"x" * window)  # the server's MAX_FRAME_SIZE allows one frame
        raw.h2.ping(b"12345678")
        await raw.flush()
        await raw.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived))
        await called.wait()
        # The PING was answered after every DATA byte was parsed: had the server acknowledged data on
        # receipt, its WINDOW_UPDATE would have come first.
        assert raw.h2.local_flow_control_window(1) == 0
        release.set()
        await raw.wait_for(lambda e: isinstance(e, h2.events.WindowUpdated) and e.stream_id == 1)
        assert raw.h2.local_flow_control_window(1) > 0
        raw.h2.end_stream(1)
        await raw.flush()
        data = await raw.wait_for(lambda e: isinstance(e, h2.events.DataReceived))
        assert isinstance(data, h2.events.DataReceived)
        assert data.data == b"%d" % window


async def test_client_reset_cancels_only_that_stream() -> None:
    started = trio.Event()
    cancelled = trio.Event()
    errors: list[BaseException] = []

    async def handler(request: Request) -> Response:
        if request.path == b"/hang":
            started.set()
            try:
                await request.body.read_all(1 << 20)
            except DownstreamReset as exc:
                errors.append(exc)
                raise
            except trio.Cancelled:
                cancelled.set()
                raise
        return await echo(request)

    async with h2_server(handler) as port, RawClient.connect(port) as raw:
        raw.h2.send_headers(1, request_headers(b"/hang", b"POST"))
        await raw.flush()
        await started.wait()
        raw.h2.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        raw.h2.send_headers(3, request_headers(b"/ok"), end_stream=True)
        await raw.flush()
        response = await raw.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived))
        assert isinstance(response, h2.events.ResponseReceived)
        assert response.stream_id == 3
        assert (b":status", b"200") in (response.headers or [])
    assert cancelled.is_set() or errors


async def test_handler_failure_is_a_500_on_that_stream_and_a_broken_body_resets_only_its_stream() -> None:
    async def broken_source() -> bytes:
        raise RuntimeError("upstream body exploded")

    async def handler(request: Request) -> Response:
        if request.path == b"/raise":
            raise ValueError("handler bug")
        if request.path == b"/broken-body":
            return Response(status=200, body=Body(broken_source))
        return await echo(request)

    async with h2_server(handler) as port, RawClient.connect(port) as raw:
        raw.h2.send_headers(1, request_headers(b"/raise"), end_stream=True)
        raw.h2.send_headers(3, request_headers(b"/broken-body"), end_stream=True)
        raw.h2.send_headers(5, request_headers(b"/fine"), end_stream=True)
        await raw.flush()
        outcomes: dict[int, object] = {}
        with trio.fail_after(10):
            while len(outcomes) < 3:
                event = await raw.wait_for(
                    lambda e: isinstance(
                        e, h2.events.StreamReset | h2.events.StreamEnded | h2.events.ResponseReceived
                    )
                )
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    outcomes[1] = dict(event.headers or [])[b":status"]
                elif isinstance(event, h2.events.StreamReset):
                    outcomes[event.stream_id] = h2.errors.ErrorCodes(event.error_code)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 5:
                    outcomes[5] = "ended"
    assert outcomes == {1: b"500", 3: h2.errors.ErrorCodes.INTERNAL_ERROR, 5: "ended"}


def _frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([frame_type, flags]) + stream_id.to_bytes(4, "big") + payload
    )


HANDSHAKE = H2_PREFACE + hyperframe.frame.SettingsFrame(0).serialize()
END_HEADERS = 0x4
END_STREAM = 0x1

BAD_INPUT = [
    ("data on stream 0", HANDSHAKE + _frame(0x0, 0, 0, b"hello"), h2.errors.ErrorCodes.PROTOCOL_ERROR),
    (
        "headers with a garbage HPACK block",
        HANDSHAKE + _frame(0x1, END_HEADERS | END_STREAM, 1, b"\x80\xff\xff"),
        h2.errors.ErrorCodes.COMPRESSION_ERROR,
    ),
    ("bad preface", b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n", h2.errors.ErrorCodes.PROTOCOL_ERROR),
    (
        "window update of zero on the connection",
        HANDSHAKE + _frame(0x8, 0, 0, (0).to_bytes(4, "big")),
        h2.errors.ErrorCodes.PROTOCOL_ERROR,
    ),
    (
        "settings frame of a wrong length",
        HANDSHAKE + _frame(0x4, 0, 0, b"\x00\x03\x00"),
        h2.errors.ErrorCodes.FRAME_SIZE_ERROR,
    ),
    (
        "request stream with an even id",
        HANDSHAKE + _frame(0x1, END_HEADERS | END_STREAM, 2, b"\x82\x86\x84\x41\x03svc"),
        h2.errors.ErrorCodes.PROTOCOL_ERROR,
    ),
]


async def send_raw_and_collect(port: int, data: bytes) -> list[hyperframe.frame.Frame]:
    """Send raw bytes, read until the server closes, and parse what it sent into frames."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
    frames = []
    view = memoryview(received)
    while len(view) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


@pytest.mark.parametrize(("case", "data", "code"), BAD_INPUT, ids=[case for case, _, _ in BAD_INPUT])
async def test_bad_input_gets_goaway_with_the_right_code_and_other_connections_keep_working(
    case: str, data: bytes, code: h2.errors.ErrorCodes
) -> None:
    async with h2_server() as port:
        bystander = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_http2_client(bystander) as client:
            before = await client.request(Request(method=b"GET", path=b"/before", authority=b"a"))
            assert await before.body.read_all(1024) == b"GET /before a len=0"

            frames = await send_raw_and_collect(port, data)
            goaways = [frame for frame in frames if isinstance(frame, hyperframe.frame.GoAwayFrame)]
            assert len(goaways) == 1, f"{case}: expected one GOAWAY, got {frames}"
            assert h2.errors.ErrorCodes(goaways[0].error_code) == code

            after = await client.request(Request(method=b"GET", path=b"/after", authority=b"a"))
            assert await after.body.read_all(1024) == b"GET /after a len=0"
        fresh = await get(port, b"/fresh")
        assert fresh.status == 200


async def test_a_data_frame_on_a_finished_request_stream_resets_that_stream_only() -> None:
    async with h2_server() as port, RawClient.connect(port) as raw:
        raw.h2.send_headers(1, request_headers(b"/first"), end_stream=True)
        await raw.flush()
        await raw.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 1)
        # Stream 1 is closed on both sides now: late DATA is a stream error, answered with
        # RST_STREAM(STREAM_CLOSED) (which the raw client's h2 swallows, so the frames are checked).
        await raw.stream.send_all(_frame(0x0, 0, 1, b"late"))
        raw.h2.send_headers(3, request_headers(b"/second"), end_stream=True)
        await raw.flush()
        ended = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamEnded))
        assert isinstance(ended, h2.events.StreamEnded)
        assert ended.stream_id == 3
    resets = [frame for frame in raw.frames if isinstance(frame, hyperframe.frame.RstStreamFrame)]
    assert [(frame.stream_id, frame.error_code) for frame in resets] == [
        (1, h2.errors.ErrorCodes.STREAM_CLOSED)
    ]
    assert not any(isinstance(frame, hyperframe.frame.GoAwayFrame) for frame in raw.frames)


async def test_client_goaway_lets_streams_in_flight_finish() -> None:
    release = trio.Event()

    async def handler(request: Request) -> Response:
        await release.wait()
        return await echo(request)

    async with h2_server(handler) as port, RawClient.connect(port) as raw:
        raw.h2.send_headers(1, request_headers(b"/inflight"), end_stream=True)
        await raw.flush()
        # A graceful GOAWAY from the client (sent around h2, whose own would close its state machine).
        await raw.stream.send_all(_frame(0x7, 0, 0, (0).to_bytes(4, "big") + (0).to_bytes(4, "big")))
        raw.h2.ping(b"abcdefgh")
        await raw.flush()
        await raw.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived))
        release.set()
        ended = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamEnded))
        assert isinstance(ended, h2.events.StreamEnded)
        assert ended.stream_id == 1


def lenient_client(stream: trio.SocketStream) -> RawClient:
    """A raw client whose h2 sends header blocks as given, however malformed."""
    client = RawClient(stream)
    client.h2 = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    client.h2.initiate_connection()
    return client


MALFORMED_HEADS = [
    ("upper-case name", [*request_headers(), (b"X-Upper", b"1")]),
    ("missing :path", [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc")]),
    ("missing :method", [(b":scheme", b"http"), (b":authority", b"svc"), (b":path", b"/")]),
    ("connection header", [*request_headers(), (b"connection", b"close")]),
    ("transfer-encoding", [*request_headers(), (b"transfer-encoding", b"chunked")]),
    ("te other than trailers", [*request_headers(), (b"te", b"gzip")]),
    ("unknown pseudo-header", [*request_headers(), (b":status", b"200")]),
    ("pseudo after regular", [(b":method", b"GET"), (b"x-a", b"1"), (b":scheme", b"http"), (b":path", b"/")]),
    ("newline in a value", [*request_headers(), (b"x-a", b"1\r\nx-b: 2")]),
    ("CONNECT with a path", [(b":method", b"CONNECT"), (b":authority", b"svc:80"), (b":path", b"/")]),
]


@pytest.mark.parametrize(("case", "head"), MALFORMED_HEADS, ids=[case for case, _ in MALFORMED_HEADS])
async def test_a_malformed_request_head_resets_only_its_stream(
    case: str, head: list[tuple[bytes, bytes]]
) -> None:
    async with h2_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            raw = lenient_client(stream)
            await raw.flush()
            raw.h2.send_headers(1, head, end_stream=True)
            raw.h2.send_headers(3, request_headers(b"/fine"), end_stream=True)
            await raw.flush()
            reset = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamReset))
            assert isinstance(reset, h2.events.StreamReset)
            assert (reset.stream_id, reset.error_code) == (1, h2.errors.ErrorCodes.PROTOCOL_ERROR), case
            ended = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamEnded))
            assert isinstance(ended, h2.events.StreamEnded)
            assert ended.stream_id == 3
    assert not any(isinstance(frame, hyperframe.frame.GoAwayFrame) for frame in raw.frames)


async def test_trailers_with_a_pseudo_header_reset_the_stream() -> None:
    async with h2_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            raw = lenient_client(stream)
            raw.h2.send_headers(1, request_headers(method=b"POST"))
            raw.h2.send_data(1, b"body")
            raw.h2.send_headers(1, [(b":path", b"/sneaky")], end_stream=True)
            await raw.flush()
            reset = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamReset))
            assert isinstance(reset, h2.events.StreamReset)
            assert (reset.stream_id, reset.error_code) == (1, h2.errors.ErrorCodes.PROTOCOL_ERROR)


async def test_host_stands_in_for_authority_and_cookie_crumbs_are_joined() -> None:
    async def show(request: Request) -> Response:
        text = b"authority=%s\n" % request.authority + b"".join(
            b"%s: %s\n" % pair for pair in request.headers
        )
        return Response(status=200, body=Body.from_bytes(text))

    async with h2_server(show) as port, RawClient.connect(port) as raw:
        head = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
        head += [(b"host", b"search:8080"), (b"cookie", b"a=1"), (b"x-mid", b"m"), (b"cookie", b"b=2")]
        raw.h2.send_headers(1, head, end_stream=True)
        await raw.flush()
        data = await raw.wait_for(lambda e: isinstance(e, h2.events.DataReceived))
        assert isinstance(data, h2.events.DataReceived)
    assert data.data == b"authority=search:8080\nx-mid: m\ncookie: a=1; b=2\n"


async def test_an_upstream_failure_the_handler_lets_through_becomes_a_503_with_its_flag() -> None:
    async def failing(request: Request) -> Response:
        raise UpstreamConnectionLost("HTTP/2 connection to 10.0.0.9:8080 ended", reason="peer closed")

    async with h2_server(failing) as port:
        response = await get(port, b"/x")
    assert response.status == 503
    text = await response.body.read_all(4096)
    assert text.startswith(b"upstream connect error or disconnect/reset before headers")
    assert b"10.0.0.9:8080" in text


async def test_drain_finishes_streams_in_flight_refuses_new_ones_and_closes() -> None:
    release = trio.Event()
    started = trio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await release.wait()
        return await echo(request)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        server = Http2ServerConnection(await listeners[0].accept(), handler)
        await nursery.start(server.run)
        async with stream:
            raw = RawClient(stream)
            keep_streams_after_goaway(raw.h2)
            raw.h2.send_headers(1, request_headers(b"/inflight"), end_stream=True)
            await raw.flush()
            await started.wait()
            server.drain()
            # The raw client's h2 would close on GOAWAY, so the frame is read from the recording.
            raw.h2.ping(b"drain-01")
            await raw.flush()
            await raw.wait_for(lambda e: isinstance(e, h2.events.PingAckReceived))
            goaways = [frame for frame in raw.frames if isinstance(frame, hyperframe.frame.GoAwayFrame)]
            assert [(g.last_stream_id, g.error_code) for g in goaways] == [(1, 0)]
            raw.h2.send_headers(3, request_headers(b"/too-late"), end_stream=True)
            await raw.flush()
            refused = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamReset))
            assert isinstance(refused, h2.events.StreamReset)
            assert (refused.stream_id, refused.error_code) == (3, h2.errors.ErrorCodes.REFUSED_STREAM)
            release.set()
            ended = await raw.wait_for(lambda e: isinstance(e, h2.events.StreamEnded))
            assert isinstance(ended, h2.events.StreamEnded)
            assert ended.stream_id == 1
            with trio.fail_after(10):
                while await stream.receive_some(65536):
                    pass  # the server closes once the stream is done


def test_data_frame_repr_does_not_hex_encode_the_payload() -> None:
    frame = hyperframe.frame.DataFrame(1, data=b"\xab" * 4096)
    assert "abab" not in repr(frame)
    assert "4096 bytes" in repr(frame)


async def test_a_peer_that_never_reads_cannot_hold_a_failed_connection_open(autojump_clock: object) -> None:
    """After a protocol error the server tries to flush its GOAWAY, but only for CLOSE_FLUSH_TIMEOUT."""
    client, server = trio.testing.lockstep_stream_pair()  # send_all blocks until the peer reads
    finished = trio.Event()

    async def serve() -> None:
        await serve_http2(server, echo)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
        with trio.fail_after(60):
            await finished.wait()
    assert trio.current_time() >= CLOSE_FLUSH_TIMEOUT
