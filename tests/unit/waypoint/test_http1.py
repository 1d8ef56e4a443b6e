"""HTTP/1.1 on the waypoint: keep-alive, chunked bodies, 100-continue and hostile input."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from waypoint.http1 import Http1ClientConnection, serve_http1
from waypoint.messages import Body, Request, Response


async def echo_handler(request: Request) -> Response:
    body = await request.body.read_all(1 << 20)
    text = b"%s %s host=%s body=%s" % (request.method, request.path, request.authority, body)
    return Response(status=200, headers=[(b"content-length", str(len(text)).encode())], body=Body.from_bytes(text))


@asynccontextmanager
async def http1_server() -> AsyncIterator[tuple[str, int]]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda stream: serve_http1(stream, echo_handler), 0
        )
        yield listeners[0].socket.getsockname()
        nursery.cancel_scope.cancel()


async def exchange(addr: tuple[str, int], data: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or 5 s)."""
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.move_on_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    async with http1_server() as addr:
        reply = await exchange(
            addr,
            b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz",
        )
    assert reply.count(b"HTTP/1.1 200") == 2
    assert b"GET /a host=svc body=" in reply and b"POST /b host=svc body=xyz" in reply


async def test_chunked_request_body_reaches_the_handler() -> None:
    async with http1_server() as addr:
        reply = await exchange(
            addr,
            b"POST /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
    assert b"body=abcde" in reply


async def test_expect_100_continue_gets_an_interim_response() -> None:
    async with http1_server() as addr:
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            await stream.send_all(
                b"PUT /u HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            )
            with trio.fail_after(5):
                interim = await stream.receive_some(1024)
            assert interim.startswith(b"HTTP/1.1 100")
            await stream.send_all(b"ok")
            final = b""
            with trio.fail_after(5):
                while not final.endswith(b"body=ok"):
                    final += await stream.receive_some(1024)
            assert final.startswith(b"HTTP/1.1 200") and final.endswith(b"body=ok")


@pytest.mark.parametrize(
    ("case", "data", "status"),
    [
        ("broken chunked encoding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("headers over 60 KiB", b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (61 * 1024) + b"\r\n\r\n", 431),
        (
            "Content-Length with Transfer-Encoding (smuggling attempt)",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        ("garbage request line", b"\x16\x03\x01 not http\r\n\r\n", 400),
        ("unsupported transfer coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
)
async def test_bad_input_is_answered_and_the_server_keeps_serving(case: str, data: bytes, status: int) -> None:
    async with http1_server() as addr:
        reply = await exchange(addr, data)
        assert reply.startswith(b"HTTP/1.1 %d" % status), reply[:200]
        assert b"connection: close" in reply.lower()
        healthy = await exchange(addr, b"GET /still-alive HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert b"GET /still-alive" in healthy


async def test_curl_talks_to_the_server(tmp_path: Path) -> None:
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    async with http1_server() as (host, port):
        result = await trio.run_process(
            ["curl", "-sS", "--max-time", "5", "-d", "hello", f"http://{host}:{port}/curl"], capture_stdout=True
        )
    assert result.stdout == b"POST /curl host=127.0.0.1:%d body=hello" % port


async def test_client_connection_reuses_a_keep_alive_upstream(tmp_path: Path) -> None:
    """Against Python's own http.server (an independent HTTP/1.1 implementation)."""
    (tmp_path / "hello.txt").write_text("hi there")
    async with trio.open_nursery() as nursery:
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [sys.executable, "-m", "http.server", "--protocol", "HTTP/1.1", "--bind", "127.0.0.1", str(port)]
        proc = await nursery.start(partial(trio.run_process, argv, cwd=tmp_path, check=False))
        try:
            with trio.fail_after(10):
                while True:
                    try:
                        stream = await trio.open_tcp_stream("127.0.0.1", port)
                        break
                    except OSError:
                        await trio.sleep(0.05)
            async with stream:
                client = Http1ClientConnection(stream)
                for _ in range(2):
                    response = await client.request(
                        Request(method=b"GET", path=b"/hello.txt", authority=b"127.0.0.1")
                    )
                    assert response.status == 200
                    assert await response.body.read_all(1024) == b"hi there"
                    assert client.reusable
                assert client.requests_sent == 2
        finally:
            proc.terminate()
