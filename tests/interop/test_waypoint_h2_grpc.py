"""A real grpcio client and server talking through a trio proxy built from the waypoint's HTTP/2 parts.

The proxy is what the waypoint does on the inner stream of a tunnel: :func:`serve_http2` takes each
downstream request, and the handler forwards it over one multiplexed :class:`Http2ClientConnection`
to the grpcio server on loopback. The service is defined without protoc (generic handlers, bytes in
and out). grpcio's blocking client runs in worker threads because it offers no trio API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from waypoint.http2 import Http2ClientConnection, serve_http2
from waypoint.messages import Request, Response, header_value

grpc = pytest.importorskip("grpc")

pytestmark = pytest.mark.interop

SERVICE = "mesh.test.Echo"
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def _unary(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-served-by", "grpcio"),))
    return b"echo:" + request


def _server_stream(request: bytes, context: Any) -> Iterator[bytes]:
    count = int(request)
    for index in range(count):
        yield b"item-%d" % index


def _not_found(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, f"no such thing: {request.decode()}")
    raise AssertionError("abort returns only by raising")


@pytest.fixture
def grpc_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)


@asynccontextmanager
async def grpc_proxy(upstream_port: int, seen: list[Response]) -> AsyncIterator[int]:
    """h2c in, h2c out; every upstream response the proxy relays is appended to ``seen``."""
    async with trio.open_nursery() as nursery:
        upstream_stream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
        upstream = Http2ClientConnection(upstream_stream, peer=f"127.0.0.1:{upstream_port}")
        await nursery.start(upstream.run)

        async def forward(request: Request) -> Response:
            response = await upstream.request(request)
            seen.append(response)
            return response

        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda stream: serve_http2(stream, forward), 0
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def _call_unary(port: int, method: str, payload: bytes) -> tuple[Any, Any, Any, Any]:
    """Returns (reply or None, code, details, trailing metadata)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None
        )
        try:
            reply, outcome = call.with_call(payload, timeout=10)
        except grpc.RpcError as exc:
            return None, exc.code(), exc.details(), exc.trailing_metadata()
        return reply, outcome.code(), outcome.details(), outcome.trailing_metadata()


def _call_server_stream(port: int, count: int) -> tuple[list[bytes], Any]:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_stream(
            f"/{SERVICE}/ServerStream", request_serializer=None, response_deserializer=None
        )
        responses = call(str(count).encode(), timeout=10)
        items = list(responses)
        return items, responses.code()


async def test_unary_call_through_the_proxy_carries_grpc_status_in_trailers(grpc_server: int) -> None:
    seen: list[Response] = []
    async with grpc_proxy(grpc_server, seen) as port:
        reply, code, _details, trailing = await trio.to_thread.run_sync(_call_unary, port, "Unary", b"hello")
    assert reply == b"echo:hello"
    assert code == grpc.StatusCode.OK
    assert ("x-served-by", "grpcio") in tuple(trailing)
    assert len(seen) == 1
    relayed = seen[0]
    assert relayed.status == 200
    assert header_value(relayed.headers, b"content-type") == b"application/grpc"
    assert header_value(relayed.body.trailers, b"grpc-status") == b"0"
    assert header_value(relayed.headers, b"grpc-status") is None


async def test_server_streaming_call_through_the_proxy(grpc_server: int) -> None:
    seen: list[Response] = []
    async with grpc_proxy(grpc_server, seen) as port:
        items, code = await trio.to_thread.run_sync(_call_server_stream, port, 25)
    assert items == [b"item-%d" % index for index in range(25)]
    assert code == grpc.StatusCode.OK
    assert header_value(seen[0].body.trailers, b"grpc-status") == b"0"


async def test_grpc_error_status_and_details_are_propagated(grpc_server: int) -> None:
    seen: list[Response] = []
    async with grpc_proxy(grpc_server, seen) as port:
        reply, code, details, _trailing = await trio.to_thread.run_sync(
            _call_unary, port, "NotFound", b"widget-7"
        )
    assert reply is None
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "no such thing: widget-7"
    # grpcio answers an abort as Trailers-Only: the status travels in the only header block.
    relayed = seen[0]
    status = header_value(relayed.headers, b"grpc-status") or header_value(
        relayed.body.trailers, b"grpc-status"
    )
    assert status == b"5"


async def test_concurrent_calls_are_multiplexed_through_the_proxy(grpc_server: int) -> None:
    seen: list[Response] = []
    results: list[bytes] = []
    async with grpc_proxy(grpc_server, seen) as port:

        async def one(index: int) -> None:
            reply, code, _details, _trailing = await trio.to_thread.run_sync(
                _call_unary, port, "Unary", b"n%d" % index
            )
            assert code == grpc.StatusCode.OK
            results.append(reply)

        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(one, index)
    assert sorted(results) == sorted(b"echo:n%d" % index for index in range(8))
    assert len(seen) == 8
