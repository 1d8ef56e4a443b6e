"""The tiny client's error mapping: what a meshctl user sees when a component is not there."""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio

from meshcore.admin.client import AdminRequestFailed, AdminRequestTimeout, HttpConnection, http_request


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connection_refused_says_what_to_check() -> None:
    port = closed_port()
    with pytest.raises(AdminRequestFailed) as info:
        await http_request("127.0.0.1", port, "GET", "/healthz/ready")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "is the component running" in message


async def test_silent_server_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def never_answer(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), never_answer, 0)
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(AdminRequestTimeout, match="did not answer within 3"):
            await http_request("127.0.0.1", port, "GET", "/config_dump", timeout=3)
        nursery.cancel_scope.cancel()


async def test_garbage_response_is_reported_as_malformed() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # read the request first, so the client's send cannot fail
        await stream.send_all(b"SSH-2.0-OpenSSH_9.0\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), garbage, 0)
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(AdminRequestFailed, match="malformed HTTP response"):
            await http_request("127.0.0.1", port, "GET", "/")
        nursery.cancel_scope.cancel()


async def test_connection_reopens_after_the_server_asked_to_close() -> None:
    async def one_shot(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), one_shot, 0)
        port = listeners[0].socket.getsockname()[1]
        async with HttpConnection("127.0.0.1", port) as conn:
            first = await conn.request("GET", "/a")
            assert not conn.reusable
            second = await conn.request("GET", "/b")
        assert (first.text(), second.text()) == ("ok", "ok")
        nursery.cancel_scope.cancel()
