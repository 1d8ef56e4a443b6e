"""gRPC inside HBONE: the waypoint's real position on the data path, minus routing.

grpcio client → a stand-in ztunnel outbound (plain TCP in, HBONE tunnel out, real mTLS + HTTP/2
CONNECT from ``meshcore.hbone``) → waypoint: HBONE terminated, :func:`serve_http2` on the tunnel's
inner stream, each request forwarded over :class:`Http2ClientConnection` → grpcio server.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from functools import partial
from typing import Any

import pytest
import trio

from meshcore.hbone import ConnectRequest, Respond, copy_bidirectional
from tests.unit.meshcore.hbone.harness import loopback_mesh
from waypoint.http2 import Http2ClientConnection, serve_http2
from waypoint.messages import Request, Response, header_value

grpc = pytest.importorskip("grpc")

pytestmark = pytest.mark.interop

SERVICE = "mesh.test.Catalog"


def _lookup(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "item missing is not in the catalog")
    return b"found:" + request


def _list(request: bytes, context: Any) -> Iterator[bytes]:
    for index in range(int(request)):
        yield b"item-%d" % index


@pytest.fixture
def grpc_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Lookup": grpc.unary_unary_rpc_method_handler(_lookup),
                    "List": grpc.unary_stream_rpc_method_handler(_list),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)


def _calls(port: int) -> tuple[bytes, list[bytes], Any, str]:
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        lookup = channel.unary_unary(
            f"/{SERVICE}/Lookup", request_serializer=None, response_deserializer=None
        )
        listing = channel.unary_stream(
            f"/{SERVICE}/List", request_serializer=None, response_deserializer=None
        )
        found = lookup(b"book", timeout=10)
        items = list(listing(b"12", timeout=10))
        try:
            lookup(b"missing", timeout=10)
        except grpc.RpcError as exc:
            return found, items, exc.code(), exc.details()
        raise AssertionError("the missing item was found")


async def test_grpc_through_hbone_and_the_waypoint(grpc_server: int) -> None:
    relayed: list[Response] = []
    async with trio.open_nursery() as nursery:
        upstream = Http2ClientConnection(await trio.open_tcp_stream("127.0.0.1", grpc_server))
        await nursery.start(upstream.run)

        async def forward(request: Request) -> Response:
            response = await upstream.request(request)
            relayed.append(response)
            return response

        async def waypoint(request: ConnectRequest, respond: Respond) -> None:
            tunnel = await respond(200)
            assert tunnel is not None
            await serve_http2(tunnel, forward)

        async with loopback_mesh(handler=waypoint) as mesh:

            async def ztunnel_outbound(app: trio.SocketStream) -> None:
                async with app, mesh.pool.open(mesh.key(), f"127.0.0.1:{grpc_server}") as (_, tunnel):
                    await copy_bidirectional(app, tunnel)

            listeners = await nursery.start(partial(trio.serve_tcp, ztunnel_outbound, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            found, items, code, details = await trio.to_thread.run_sync(_calls, port)
            assert mesh.pool.statistics().dials >= 1
        nursery.cancel_scope.cancel()
    assert found == b"found:book"
    assert items == [b"item-%d" % index for index in range(12)]
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "item missing is not in the catalog"
    assert len(relayed) == 3
    assert header_value(relayed[0].body.trailers, b"grpc-status") == b"0"
    assert header_value(relayed[1].body.trailers, b"grpc-status") == b"0"
