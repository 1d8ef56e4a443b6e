"""The explicit-proxy shell over loopback: SOCKS5, HTTP CONNECT and absolute-form to a passthrough echo,
bad greetings answered and closed while the listener keeps serving."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from meshcore.hbone.pool import HbonePool
from meshcore.telemetry.metrics import Registry
from schemas.discovery import Workload
from tests.support.ztunnel_mesh import receive_exactly, socks5_connect
from ztunnel.drain import Drain
from ztunnel.explicit_proxy import ExplicitProxyListener
from ztunnel.outbound import Outbound
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionTelemetry

SOURCE = Workload(uid="c", name="client", namespace="front", addresses=("127.0.0.9",), node="n")


@attrs.define
class Proxy:
    address: tuple[str, int]
    echo_port: int
    http_port: int
    listener: ExplicitProxyListener
    drain: Drain


@pytest.fixture
async def proxy(nursery: trio.Nursery) -> AsyncIterator[Proxy]:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()

    async def http(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            body = head.split(b"\r\n", 1)[0]
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    echo_port = (await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")))[0]
    http_port = (await nursery.start(functools.partial(trio.serve_tcp, http, 0, host="127.0.0.1")))[0]
    state = ProxyState()
    state.replace_all(workloads=[SOURCE], services=[], policies=[])
    drain = Drain()
    pool = HbonePool(lambda key: (_ for _ in ()).throw(AssertionError("no tunnels here")))
    outbound = Outbound(state=state, pool=pool, telemetry=ConnectionTelemetry(Registry()), drain=drain)
    listener = ExplicitProxyListener(SOURCE, host="127.0.0.1", port=0, outbound=outbound, drain=drain)
    address = await nursery.start(listener.run)
    yield Proxy(address, echo_port.socket.getsockname()[1], http_port.socket.getsockname()[1], listener, drain)


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_socks5_passthrough(proxy: Proxy) -> None:
    stream, code = await socks5_connect(proxy.address, "127.0.0.1", proxy.echo_port)
    assert code == 0
    async with stream:
        await stream.send_all(b"ping")
        await stream.send_eof()
        assert await read_to_eof(stream) == b"ping"


async def test_http_connect_passthrough(proxy: Proxy) -> None:
    stream = await trio.open_tcp_stream(*proxy.address)
    async with stream:
        await stream.send_all(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nhost: x\r\n\r\nearly" % proxy.echo_port)
        expected = b"HTTP/1.1 200 Connection established\r\n\r\nearly"
        assert await receive_exactly(stream, len(expected)) == expected
        await stream.send_eof()
        assert await read_to_eof(stream) == b""


async def test_absolute_form_is_rewritten_to_origin_form(proxy: Proxy) -> None:
    stream = await trio.open_tcp_stream(*proxy.address)
    async with stream:
        await stream.send_all(b"GET http://127.0.0.1:%d/path?q=1 HTTP/1.1\r\nhost: x\r\n\r\n" % proxy.http_port)
        reply = await read_to_eof(stream)
    assert reply.endswith(b"\r\n\r\nGET /path?q=1 HTTP/1.1")


async def test_refused_destination_gets_a_socks_refusal(proxy: Proxy) -> None:
    stream, code = await socks5_connect(proxy.address, "127.0.0.1", 1)
    async with stream:
        assert code == 0x05 and await read_to_eof(stream) == b""


@pytest.mark.parametrize(
    ("greeting", "answer"),
    [
        (b"\x05\x01\x02", b"\x05\xff"),  # only username/password offered
        (b"\x16\x03\x01\x00\x05hello", b"HTTP/1.1 400 Bad Request"),  # TLS sent to the proxy
        (b"POST /relative HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ],
)
async def test_bad_greetings_are_answered_and_closed(proxy: Proxy, greeting: bytes, answer: bytes) -> None:
    stream = await trio.open_tcp_stream(*proxy.address)
    async with stream:
        await stream.send_all(greeting)
        reply = await read_to_eof(stream)
    assert reply.startswith(answer)
    assert proxy.listener.rejected == 1
    good, code = await socks5_connect(proxy.address, "127.0.0.1", proxy.echo_port)
    async with good:
        assert code == 0


async def test_drain_stops_accepting_but_open_connections_finish(proxy: Proxy) -> None:
    stream, code = await socks5_connect(proxy.address, "127.0.0.1", proxy.echo_port)
    assert code == 0
    async with stream:
        proxy.drain.request()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*proxy.address)
        await stream.send_all(b"still")
        await stream.send_eof()
        assert await read_to_eof(stream) == b"still"
