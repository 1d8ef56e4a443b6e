"""Shared HBONE test set-up: a server, a pool and apps, over loopback TCP or memory streams."""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing

from meshcore.hbone import ConnectRequest, HbonePool, HboneServer, PoolKey, Respond, copy_bidirectional
from meshcore.hbone.connection import HboneConnection
from meshcore.hbone.h2stream import HboneStream
from meshcore.hbone.server import VerifyPeer
from tests.unit.meshcore.hbone.pki import Pki, verify_any_in_domain, verify_one_of


async def echo_app(stream: trio.abc.Stream) -> None:
    """Echo until EOF, then half-close back."""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(262144)
            except trio.BrokenResourceError:
                return
            if not data:
                break
            await stream.send_all(data)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()


@attrs.define
class AppEvents:
    """What apps behind the server observed (for reset propagation tests)."""

    resets: int = 0
    received: int = 0
    reset_seen: trio.Event = attrs.field(factory=trio.Event)


async def sink_app(events: AppEvents, stream: trio.abc.Stream) -> None:
    """Swallow bytes, record whether the connection ended with a reset."""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(262144)
            except trio.BrokenResourceError:
                events.resets += 1
                events.reset_seen.set()
                return
            if not data:
                return
            events.received += len(data)


async def tunnel_to_app(request: ConnectRequest, respond: Respond) -> None:
    """A minimal ztunnel inbound: connect to the app at the authority, answer, copy."""
    try:
        app = await trio.open_tcp_stream(str(request.target_ip), request.target_port)
    except OSError:
        await respond(503)
        return
    async with app:
        stream = await respond(200, [("baggage", f"peer={request.peer_identity}")])
        assert stream is not None
        await copy_bidirectional(stream, app)


@attrs.define
class Loopback:
    pki: Pki
    server: HboneServer
    pool: HbonePool
    server_address: tuple[str, int]
    echo_port: int
    sink_port: int
    sink_events: AppEvents
    client_id: str
    server_id: str
    client_ctx: ssl.SSLContext

    def key(self, source: str | None = None) -> PoolKey:
        host, port = self.server_address
        return PoolKey(source or self.client_id, (self.server_id,), host, port)


@asynccontextmanager
async def loopback_mesh(
    handler: Callable[[ConnectRequest, Respond], object] = tunnel_to_app,
    host: str = "127.0.0.1",
) -> AsyncIterator[Loopback]:
    """Server on 127.0.0.1, echo and sink apps, and a running pool whose key targets the server."""
    pki = Pki()
    server_id, client_id = pki.spiffe("apps", "server"), pki.spiffe("apps", "client")
    sink_events = AppEvents()
    async with trio.open_nursery() as nursery:
        echo_listeners = await nursery.start(functools.partial(trio.serve_tcp, echo_app, 0, host=host))
        sink_listeners = await nursery.start(
            functools.partial(trio.serve_tcp, lambda s: sink_app(sink_events, s), 0, host=host)
        )
        server = HboneServer(
            pki.server_context(server_id),
            verify_any_in_domain(),
            handler,  # type: ignore[arg-type]
            serves=lambda ip: ip == ipaddress.ip_address(host),
        )
        address = await nursery.start(server.run, host, 0)
        client_ctx = pki.client_context(client_id)
        pool = HbonePool(lambda key: (client_ctx, verify_one_of(key.destination_identities)))
        await nursery.start(pool.run)
        yield Loopback(
            pki=pki,
            server=server,
            pool=pool,
            server_address=address,
            echo_port=echo_listeners[0].socket.getsockname()[1],
            sink_port=sink_listeners[0].socket.getsockname()[1],
            sink_events=sink_events,
            client_id=client_id,
            server_id=server_id,
            client_ctx=client_ctx,
        )
        nursery.cancel_scope.cancel()


async def echo_once(stream: trio.abc.Stream, payload: bytes) -> bytes:
    """Send ``payload`` and read back exactly as many bytes."""
    await stream.send_all(payload)
    received = bytearray()
    while len(received) < len(payload):
        chunk = await stream.receive_some(len(payload) - len(received))
        assert chunk, "tunnel ended before the echo came back"
        received += chunk
    return bytes(received)


@attrs.define
class MemoryMesh:
    """Server and pool joined by memory streams: deterministic under ``autojump_clock``."""

    pki: Pki
    server: HboneServer
    pool: HbonePool
    dials: list[PoolKey]
    key: PoolKey


async def memory_echo_handler(request: ConnectRequest, respond: Respond) -> None:
    stream = await respond(200)
    assert stream is not None
    await echo_app(stream)


@asynccontextmanager
async def memory_mesh(
    *,
    connector_delay: float = 0.0,
    verify_server: Callable[[PoolKey], VerifyPeer] | None = None,
    handler: Callable[[ConnectRequest, Respond], Awaitable[None]] = memory_echo_handler,
    verify_client: VerifyPeer | None = None,
    **pool_options: float,
) -> AsyncIterator[MemoryMesh]:
    pki = Pki()
    server_id, client_id = pki.spiffe("apps", "server"), pki.spiffe("apps", "client")
    server = HboneServer(
        pki.server_context(server_id),
        verify_client or verify_any_in_domain(),
        handler,
        serves=lambda ip: True,
    )
    client_ctx = pki.client_context(client_id)
    dials: list[PoolKey] = []
    async with trio.open_nursery() as nursery:

        async def connector(host: str, port: int) -> trio.abc.Stream:
            dials.append(PoolKey(client_id, (server_id,), host, port))
            await trio.sleep(connector_delay)
            client_end, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(server.serve_connection, server_end)
            return client_end

        check = verify_server or (lambda key: verify_one_of(key.destination_identities))
        pool = HbonePool(lambda key: (client_ctx, check(key)), connector=connector, **pool_options)  # type: ignore[arg-type]
        await nursery.start(pool.run)
        yield MemoryMesh(pki, server, pool, dials, PoolKey(client_id, (server_id,), "10.0.0.5", 15008))
        nursery.cancel_scope.cancel()


@attrs.define
class ConnectionPair:
    client: HboneConnection
    server: HboneConnection
    accepted: trio.MemoryReceiveChannel[HboneStream]


@asynccontextmanager
async def connection_pair() -> AsyncIterator[ConnectionPair]:
    """A client and a server HboneConnection joined by memory streams (no TLS, no validation):
    every stream the client opens is answered 200 and handed to the test through ``accepted``."""
    send, receive = trio.open_memory_channel[HboneStream](1000)
    client_end, server_end = trio.testing.memory_stream_pair()

    def on_request(stream: HboneStream, headers: list[tuple[bytes, bytes]]) -> None:
        stream.send_response([(":status", "200")], final=False)
        send.send_nowait(stream)

    client = HboneConnection(client_end, client_side=True, peer="server")
    server = HboneConnection(server_end, client_side=False, peer="client", on_request=on_request)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await nursery.start(server.run)
        yield ConnectionPair(client, server, receive)
        nursery.cancel_scope.cancel()


async def open_pair(pair: ConnectionPair) -> tuple[HboneStream, HboneStream]:
    """A tunnel: (client-side stream, server-side stream)."""
    client_stream = await pair.client.open_stream([(":method", "CONNECT"), (":authority", "10.0.0.5:80")])
    return client_stream, await pair.accepted.receive()
