"""A large upstream response relayed as it streams: its connection is given back whether the body is
read to the end or the downstream goes away mid-body (no leak, no held maxConnections slot)."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from waypoint.http1 import _write_response
from waypoint.messages import Body, Response
from waypoint.upstream import RESPONSE_BUFFER, StreamingUpstreamBody, _buffered

CHUNK = 256 * 1024
TOTAL = 2 * RESPONSE_BUFFER  # past the buffer: the body streams on after the attempt


def upstream_response(closed: list[bool]) -> Response:
    remaining = TOTAL // CHUNK

    async def source() -> bytes:
        nonlocal remaining
        await trio.lowlevel.checkpoint()
        if remaining == 0:
            closed.append(True)
            return b""
        remaining -= 1
        return b"x" * CHUNK

    return Response(status=200, headers=[(b"content-length", str(TOTAL).encode())], body=Body(source))


class Releases:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    async def __call__(self, reusable: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(reusable)


async def test_a_body_read_to_its_end_returns_the_connection_for_reuse() -> None:
    releases = Releases()
    response = await _buffered(upstream_response([]), releases)
    assert isinstance(response.body, StreamingUpstreamBody)
    assert len(await response.body.read_all(4 * TOTAL)) == TOTAL
    await response.body.release_unread()  # a no-op after the end: released once, as reusable
    assert releases.calls == [True]


async def test_a_body_abandoned_mid_way_closes_the_connection_once() -> None:
    releases = Releases()
    response = await _buffered(upstream_response([]), releases)
    assert isinstance(response.body, StreamingUpstreamBody)
    await response.body.release_unread()
    await response.body.release_unread()
    assert releases.calls == [False]


async def test_a_client_gone_mid_body_gives_the_upstream_connection_back() -> None:
    releases = Releases()
    response = await _buffered(upstream_response([]), releases)
    client_side, proxy_side = trio.testing.memory_stream_pair()
    await client_side.aclose()  # the client went away: every write now fails
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    with pytest.raises(trio.BrokenResourceError):
        await _write_response(conn, proxy_side, response)
    assert releases.calls == [False]
