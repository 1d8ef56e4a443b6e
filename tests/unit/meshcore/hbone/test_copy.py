"""copy_bidirectional between a loopback TCP connection and a tunnel: counters, half-close, resets."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from meshcore.hbone.copy import CopyStats, copy_bidirectional, reset_stream
from meshcore.hbone.errors import StreamReset
from meshcore.hbone.h2stream import HboneStream
from tests.unit.meshcore.hbone.harness import connection_pair, open_pair


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """Two ends of a real loopback TCP connection (so RST and FIN are the kernel's)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
    async with client, server:
        yield client, server


@asynccontextmanager
async def proxied() -> AsyncIterator[tuple[trio.SocketStream, HboneStream, CopyStats, trio.Nursery]]:
    """app ⇄ TCP ⇄ [copy] ⇄ tunnel ⇄ test: returns (app end, far tunnel end, live stats, nursery)."""
    async with connection_pair() as pair, tcp_pair() as (app, proxy_side), trio.open_nursery() as nursery:
        near, far = await open_pair(pair)
        stats = CopyStats()
        nursery.start_soon(copy_bidirectional, proxy_side, near, stats)
        yield app, far, stats, nursery


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    for _ in range(100_000):
        chunk = await stream.receive_some()
        if not chunk:
            return data
        data += chunk
    raise AssertionError("stream did not end")


async def test_bytes_are_counted_and_half_closes_cross_both_ways() -> None:
    async with proxied() as (app, far, stats, _):
        await app.send_all(b"request body")
        await app.send_eof()  # TCP FIN → END_STREAM
        assert await _read_all(far) == b"request body"
        await far.send_all(b"the response")
        await far.send_eof()  # END_STREAM → TCP FIN
        assert await _read_all(app) == b"the response"
        assert stats.downstream_to_upstream == len(b"request body")
        assert stats.upstream_to_downstream == len(b"the response")
        assert not stats.reset


async def test_tunnel_reset_becomes_a_tcp_reset() -> None:
    async with proxied() as (app, far, stats, _):
        await app.send_all(b"x")
        await far.reset()
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            await _read_all(app)  # ECONNRESET, not a clean EOF
        assert stats.reset and stats.error is not None and "StreamReset" in stats.error


async def test_tcp_reset_becomes_a_tunnel_reset() -> None:
    async with proxied() as (app, far, stats, _):
        await app.send_all(b"partial")
        app.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        await app.aclose()
        with trio.fail_after(5), pytest.raises(StreamReset):
            await _read_all(far)
        assert stats.reset


async def test_reset_stream_on_a_memory_stream_just_closes_it() -> None:
    left, right = trio.testing.memory_stream_pair()
    await reset_stream(left)
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"x")
    assert await right.receive_some() == b""
