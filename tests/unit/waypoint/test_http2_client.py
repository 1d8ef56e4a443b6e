"""Http2ClientConnection on loopback: multiplexing, full-duplex bodies, stream limits, GOAWAY and failures.

The upstream is either the waypoint's own :func:`serve_http2` or a raw ``h2`` server that a test scripts
frame by frame (limits, GOAWAY, resets, garbage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio

from waypoint.h2client import UpstreamBody
from waypoint.h2core import goaway_frame
from waypoint.http2 import (
    Http2ClientConnection,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamReset,
    serve_http2,
)
from waypoint.messages import Body, Request, Response

GET = partial(Request, method=b"GET", authority=b"upstream")


class Outcomes:
    """What background calls produced, keyed by name; waiting on a key wakes on every new result."""

    def __init__(self) -> None:
        self.values: dict[bytes, object] = {}
        self._changed = trio.Event()

    def put(self, key: bytes, value: object) -> None:
        self.values[key] = value
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, *keys: bytes) -> None:
        with trio.fail_after(10):
            while not all(key in self.values for key in keys):
                await self._changed.wait()


class RawServer:
    """One accepted upstream connection driven by a bare h2 server the test scripts."""

    def __init__(self, stream: trio.SocketStream, max_streams: int | None) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        if max_streams is not None:
            self.h2.local_settings = h2.settings.Settings(
                client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams}
            )
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def next_event(self, kind: type[h2.events.Event]) -> h2.events.Event:
        """The next event of ``kind`` (fails after 10 s or at EOF); received DATA is acknowledged."""
        with trio.fail_after(10):
            while True:
                while self.events:
                    event = self.events.pop(0)
                    if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if isinstance(event, kind):
                        await self.flush()
                        return event
                data = await self.stream.receive_some(65536)
                assert data, "client closed the connection"
                self.events.extend(self.h2.receive_data(data))
                await self.flush()

    async def respond(self, stream_id: int, body: bytes, trailers: list[tuple[bytes, bytes]]) -> None:
        self.h2.send_headers(stream_id, [(b":status", b"200")])
        self.h2.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            self.h2.send_headers(stream_id, trailers, end_stream=True)
        await self.flush()


@asynccontextmanager
async def raw_upstream(
    max_streams: int | None = None,
) -> AsyncIterator[tuple[Http2ClientConnection, RawServer, trio.Nursery]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        port = listeners[0].socket.getsockname()[1]
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        server_stream = await listeners[0].accept()
        async with server_stream:
            server = RawServer(server_stream, max_streams)
            await server.flush()
            client = Http2ClientConnection(client_stream, peer=f"127.0.0.1:{port}")
            await nursery.start(client.run)
            await server.next_event(h2.events.RemoteSettingsChanged)
            yield client, server, nursery
            nursery.cancel_scope.cancel()


async def test_request_and_response_bodies_stream_both_ways_at_once() -> None:
    """Each request chunk is produced only after the previous echo arrived: needs full duplex (gRPC bidi)."""
    echoed = trio.Event()

    async def echo_as_it_arrives(request: Request) -> Response:
        incoming = request.body.chunks()

        async def relay() -> bytes:
            try:
                return await anext(incoming)
            except StopAsyncIteration:
                return b""

        return Response(status=200, body=Body(relay))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda s: serve_http2(s, echo_as_it_arrives), 0
        )
        stream = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        client = Http2ClientConnection(stream)
        await nursery.start(client.run)
        sent: list[bytes] = []

        async def produce() -> bytes:
            if sent:
                await echoed.wait()
            if len(sent) == 5:
                return b""
            sent.append(b"ping-%d" % len(sent))
            return sent[-1]

        response = await client.request(GET(path=b"/bidi", method=b"POST", body=Body(produce)))
        received: list[bytes] = []
        async with aclosing(response.body.chunks()) as chunks:
            async for chunk in chunks:
                received.append(chunk)
                echoed.set()
                echoed = trio.Event()
        assert b"".join(received) == b"".join(sent)
        assert len(sent) == 5
        nursery.cancel_scope.cancel()


async def test_stream_limit_from_the_upstream_settings_queues_extra_requests() -> None:
    async with raw_upstream(max_streams=2) as (client, server, nursery):
        assert client.max_concurrent == 2
        results = Outcomes()

        async def call(path: bytes) -> None:
            response = await client.request(GET(path=path))
            results.put(path, await response.body.read_all(1024))

        for path in (b"/a", b"/b", b"/c"):
            nursery.start_soon(call, path)
        first = await server.next_event(h2.events.RequestReceived)
        second = await server.next_event(h2.events.RequestReceived)
        assert isinstance(first, h2.events.RequestReceived) and isinstance(second, h2.events.RequestReceived)
        assert (first.stream_id, second.stream_id) == (1, 3)
        assert client.open_streams == 2
        assert not client.available
        await server.respond(1, b"one", [(b"grpc-status", b"0")])
        third = await server.next_event(h2.events.RequestReceived)
        assert isinstance(third, h2.events.RequestReceived)
        assert third.stream_id == 5
        await server.respond(3, b"two", [])
        await server.respond(5, b"three", [])
        await results.wait_for(b"/a", b"/b", b"/c")
        assert sorted(results.values.values()) == [b"one", b"three", b"two"]  # type: ignore[type-var]
        assert client.available


async def test_goaway_refuses_new_and_later_streams_and_lets_earlier_ones_finish() -> None:
    async with raw_upstream() as (client, server, nursery):
        outcomes = Outcomes()

        async def call(path: bytes) -> None:
            try:
                response = await client.request(GET(path=path))
                outcomes.put(path, (await response.body.read_all(1024), response.body.trailers))
            except UpstreamRefused as exc:
                outcomes.put(path, exc)

        nursery.start_soon(call, b"/kept")
        await server.next_event(h2.events.RequestReceived)
        nursery.start_soon(call, b"/refused")
        await server.next_event(h2.events.RequestReceived)
        await server.stream.send_all(goaway_frame(1))
        await outcomes.wait_for(b"/refused")
        assert isinstance(outcomes.values[b"/refused"], UpstreamRefused)
        assert not client.usable and not client.available
        with pytest.raises(UpstreamRefused):
            await client.request(GET(path=b"/new"))
        await server.respond(1, b"finished", [(b"grpc-status", b"0")])
        await outcomes.wait_for(b"/kept")
        assert outcomes.values[b"/kept"] == (b"finished", [(b"grpc-status", b"0")])
        # Nothing is left in flight: the client closes the connection by itself.
        with trio.fail_after(10):
            assert await server.stream.receive_some(65536) == b""


async def test_goaway_with_an_error_fails_the_requests_in_flight() -> None:
    async with raw_upstream() as (client, server, _nursery):
        async with trio.open_nursery() as calls:
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.request(GET(path=b"/x"))
                except UpstreamConnectionLost as exc:
                    errors.append(exc)

            calls.start_soon(call)
            await server.next_event(h2.events.RequestReceived)
            await server.stream.send_all(goaway_frame(1, h2.errors.ErrorCodes.INTERNAL_ERROR))
        assert len(errors) == 1
        assert "INTERNAL_ERROR" in str(errors[0])
        assert isinstance(errors[0], UpstreamConnectionLost) and errors[0].response_flag == "UC"


async def test_upstream_reset_mid_body_surfaces_as_upstream_reset() -> None:
    async with raw_upstream() as (client, server, nursery):
        responses = Outcomes()

        async def call() -> None:
            responses.put(b"/x", await client.request(GET(path=b"/x")))

        nursery.start_soon(call)
        await server.next_event(h2.events.RequestReceived)
        server.h2.send_headers(1, [(b":status", b"200")])
        server.h2.send_data(1, b"partial")
        server.h2.reset_stream(1, h2.errors.ErrorCodes.INTERNAL_ERROR)
        await server.flush()
        await responses.wait_for(b"/x")
        response = responses.values[b"/x"]
        assert isinstance(response, Response)
        with pytest.raises(UpstreamReset) as caught:
            await response.body.read_all(1024)
        assert caught.value.response_flag == "UR"
        assert "INTERNAL_ERROR" in str(caught.value)
        assert client.available


async def test_upstream_closing_the_socket_fails_requests_with_upstream_connection_lost() -> None:
    async with raw_upstream() as (client, server, nursery):
        errors = Outcomes()

        async def call() -> None:
            try:
                await client.request(GET(path=b"/x"))
            except UpstreamConnectionLost as exc:
                errors.put(b"/x", exc)

        nursery.start_soon(call)
        await server.next_event(h2.events.RequestReceived)
        await server.stream.aclose()
        await errors.wait_for(b"/x")
        assert not client.usable
        with pytest.raises(UpstreamConnectionLost):
            await client.request(GET(path=b"/y"))


async def test_invalid_frames_from_upstream_are_a_protocol_error_answered_with_goaway() -> None:
    async with raw_upstream() as (client, server, nursery):
        errors = Outcomes()

        async def call() -> None:
            try:
                await client.request(GET(path=b"/x"))
            except UpstreamProtocolError as exc:
                errors.put(b"/x", exc)

        nursery.start_soon(call)
        await server.next_event(h2.events.RequestReceived)
        data_on_stream_zero = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"
        await server.stream.send_all(data_on_stream_zero)
        terminated = await server.next_event(h2.events.ConnectionTerminated)
        assert isinstance(terminated, h2.events.ConnectionTerminated)
        assert terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        await errors.wait_for(b"/x")
        error = errors.values[b"/x"]
        assert isinstance(error, UpstreamProtocolError)
        assert error.response_flag == "UPE"


async def test_an_http1_upstream_is_named_in_the_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        port = listeners[0].socket.getsockname()[1]
        client = Http2ClientConnection(await trio.open_tcp_stream("127.0.0.1", port))
        await nursery.start(client.run)
        async with await listeners[0].accept() as upstream:
            await upstream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            with pytest.raises(UpstreamProtocolError) as caught:
                await client.request(GET(path=b"/x"))
    assert "HTTP/1.1 400 Bad Request" in str(caught.value)
    assert "is it really speaking h2c" in str(caught.value)


async def test_a_cancelled_request_resets_its_upstream_stream() -> None:
    async with raw_upstream() as (client, server, nursery):
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                await client.request(GET(path=b"/slow"))

        nursery.start_soon(call)
        await server.next_event(h2.events.RequestReceived)
        scope.cancel()
        reset = await server.next_event(h2.events.StreamReset)
        assert isinstance(reset, h2.events.StreamReset)
        assert (reset.stream_id, reset.error_code) == (1, h2.errors.ErrorCodes.CANCEL)


async def test_a_failing_request_body_resets_the_stream_and_reports_the_cause() -> None:
    class DownstreamGone(Exception):
        pass

    calls = 0

    async def source() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            return b"first"
        raise DownstreamGone("client went away")

    async with raw_upstream() as (client, server, _nursery):
        async with trio.open_nursery() as waiters:
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.request(GET(path=b"/upload", method=b"POST", body=Body(source)))
                except DownstreamGone as exc:
                    errors.append(exc)

            waiters.start_soon(call)
            reset = await server.next_event(h2.events.StreamReset)
        assert isinstance(reset, h2.events.StreamReset)
        assert reset.error_code == h2.errors.ErrorCodes.CANCEL
        assert len(errors) == 1


async def test_abandoning_a_response_body_resets_its_upstream_stream() -> None:
    async with raw_upstream() as (client, server, nursery):
        responses = Outcomes()

        async def call(path: bytes) -> None:
            responses.put(path, await client.request(GET(path=path)))

        nursery.start_soon(call, b"/dropped")
        await server.next_event(h2.events.RequestReceived)
        server.h2.send_headers(1, [(b":status", b"200")])
        server.h2.send_data(1, b"first part")
        await server.flush()
        await responses.wait_for(b"/dropped")
        dropped = responses.values[b"/dropped"]
        assert isinstance(dropped, Response) and isinstance(dropped.body, UpstreamBody)
        async with aclosing(dropped.body.chunks()) as chunks:
            async for chunk in chunks:
                assert chunk == b"first part"
                break
        dropped.body.abandon()
        reset = await server.next_event(h2.events.StreamReset)
        assert isinstance(reset, h2.events.StreamReset)
        assert (reset.stream_id, reset.error_code) == (1, h2.errors.ErrorCodes.CANCEL)
        assert 1 not in client.streams

        nursery.start_soon(call, b"/finished")
        await server.next_event(h2.events.RequestReceived)
        await server.respond(3, b"all of it", [])
        await responses.wait_for(b"/finished")
        finished = responses.values[b"/finished"]
        assert isinstance(finished, Response) and isinstance(finished.body, UpstreamBody)
        assert await finished.body.read_all(1024) == b"all of it"
        finished.body.abandon()  # read to the end: nothing to reset
        server.h2.ping(b"after-ab")
        await server.flush()
        await server.next_event(h2.events.PingAckReceived)
        assert not any(isinstance(event, h2.events.StreamReset) for event in server.events)


async def test_a_proxy_relaying_an_upstream_body_resets_upstream_when_its_client_resets() -> None:
    """serve_http2 abandons a relayed upstream body when the downstream stream goes away."""
    async with raw_upstream() as (upstream, server, nursery):
        relaying = trio.Event()

        async def forward(request: Request) -> Response:
            response = await upstream.request(request)
            relaying.set()
            return response

        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda s: serve_http2(s, forward), 0
        )
        downstream = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        async with downstream:
            raw = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None)
            )
            raw.initiate_connection()
            head = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc"), (b":path", b"/")]
            raw.send_headers(1, head, end_stream=True)
            await downstream.send_all(raw.data_to_send())
            await server.next_event(h2.events.RequestReceived)
            server.h2.send_headers(1, [(b":status", b"200")])
            server.h2.send_data(1, b"streaming...")
            await server.flush()
            await relaying.wait()
            raw.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
            await downstream.send_all(raw.data_to_send())
            reset = await server.next_event(h2.events.StreamReset)
        assert isinstance(reset, h2.events.StreamReset)
        assert (reset.stream_id, reset.error_code) == (1, h2.errors.ErrorCodes.CANCEL)
