"""The admin HTTP server over real loopback sockets: routing, limits, keep-alive and error isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from meshcore.admin.client import HttpConnection, http_request
from meshcore.admin.http import AdminServer
from meshcore.admin.messages import HttpError, Request, Response
from meshcore.errors import MeshError


class NotConfigured(MeshError):
    hint = "apply a config first"


def build_server(**limits: float) -> AdminServer:
    server = AdminServer("test", **limits)  # type: ignore[arg-type]

    @server.route("GET", "/hello")
    async def hello(request: Request) -> Response:
        return Response.json({"path": request.path, "query": dict(request.query), "client": request.client})

    @server.route("POST", "/echo")
    async def echo(request: Request) -> Response:
        return Response.json({"got": request.json(), "type": request.header("content-type")})

    @server.route("GET", "/boom")
    async def boom(_request: Request) -> Response:
        raise RuntimeError("handler bug")

    @server.route("GET", "/teapot")
    async def teapot(_request: Request) -> Response:
        raise HttpError(418, "short and stout")

    @server.route("GET", "/mesh-error")
    async def mesh_error(_request: Request) -> Response:
        raise NotConfigured("no config yet")

    @server.route("GET", "/api/resources/*")
    async def resources(request: Request) -> Response:
        return Response.text(request.path.removeprefix("/api/resources/"))

    return server


@pytest.fixture
async def served() -> AsyncIterator[tuple[AdminServer, str, int]]:
    server = build_server(max_head_bytes=8192, max_body_bytes=4096, read_timeout=2.0)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run, "127.0.0.1", 0)
        yield server, host, port
        nursery.cancel_scope.cancel()


async def raw_exchange(host: str, port: int, data: bytes, *, eof: bool = True) -> bytes:
    """Send raw bytes, half-close (unless ``eof=False``), and read the answer until the server closes."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(data)
        if eof:
            await stream.send_eof()
        received = b""
        with trio.fail_after(10):
            for _ in range(10_000):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received


async def test_run_reports_the_bound_address(served: tuple[AdminServer, str, int]) -> None:
    server, host, port = served
    assert host == "127.0.0.1" and port > 0
    assert server.address == (host, port)


async def test_route_with_query_string(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    response = await http_request(host, port, "GET", "/hello?level=debug&a=1&a=2&flag")
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    body = response.json()
    assert body["path"] == "/hello"
    assert body["query"] == {"level": ["debug"], "a": ["1", "2"], "flag": [""]}


async def test_post_body_is_delivered(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    response = await http_request(host, port, "POST", "/echo", json_body={"weights": [95, 5]})
    assert response.status == 200
    assert response.json() == {"got": {"weights": [95, 5]}, "type": "application/json"}
    bad = await http_request(host, port, "POST", "/echo", body=b"{not json")
    assert bad.status == 400
    assert "not valid JSON" in bad.text()


async def test_unknown_path_is_404_and_wrong_method_is_405(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    missing = await http_request(host, port, "GET", "/nope")
    assert missing.status == 404
    assert "no route for /nope" in missing.text()
    wrong = await http_request(host, port, "DELETE", "/hello")
    assert wrong.status == 405
    assert wrong.header("allow") == "GET, HEAD"


async def test_head_uses_get_without_a_body(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    response = await http_request(host, port, "HEAD", "/api/resources/x")
    assert response.status == 200
    assert response.body == b""
    assert response.header("content-length") == "1"


async def test_prefix_route(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    response = await http_request(host, port, "GET", "/api/resources/VirtualService/prod/search")
    assert response.text() == "VirtualService/prod/search"


async def test_handler_errors_map_to_statuses_and_the_server_survives(
    served: tuple[AdminServer, str, int],
) -> None:
    _, host, port = served
    crashed = await http_request(host, port, "GET", "/boom")
    assert crashed.status == 500
    assert "RuntimeError: handler bug" in crashed.text()
    teapot = await http_request(host, port, "GET", "/teapot")
    assert (teapot.status, teapot.text()) == (418, "short and stout\n")
    mesh = await http_request(host, port, "GET", "/mesh-error")
    assert mesh.status == 400
    assert "hint: apply a config first" in mesh.text()
    assert (await http_request(host, port, "GET", "/hello")).status == 200


async def test_keep_alive_serves_two_requests_on_one_connection(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    async with HttpConnection(host, port) as conn:
        first = await conn.request("GET", "/hello?n=1")
        assert conn.reusable
        second = await conn.request("GET", "/hello?n=2")
    assert (first.status, second.status) == (200, 200)
    assert first.json()["client"] == second.json()["client"]  # same client port: same TCP connection
    assert second.json()["query"] == {"n": ["2"]}


async def test_pipelined_requests_are_answered_in_order(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    two = b"GET /hello?n=1 HTTP/1.1\r\nhost: x\r\n\r\n"
    two += b"GET /hello?n=2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = await raw_exchange(host, port, two)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"1"') < answer.index(b'"2"')


@pytest.mark.parametrize("header_bytes", [10_000, 200_000])
async def test_huge_head_is_431_and_the_server_keeps_serving(
    served: tuple[AdminServer, str, int], header_bytes: int
) -> None:
    _, host, port = served
    head = b"GET /hello HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * header_bytes + b"\r\n\r\n"
    answer = await raw_exchange(host, port, head)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert (await http_request(host, port, "GET", "/hello")).status == 200


async def test_body_over_the_limit_is_413(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    declared = await http_request(host, port, "POST", "/echo", body=b"x" * 5000)
    assert declared.status == 413
    chunked = b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked += b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    assert (await raw_exchange(host, port, chunked)).startswith(b"HTTP/1.1 413 ")
    assert (await http_request(host, port, "GET", "/hello")).status == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /hello HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    ],
)
async def test_bad_request_is_400_and_does_not_kill_the_server(
    served: tuple[AdminServer, str, int], garbage: bytes
) -> None:
    _, host, port = served
    answer = await raw_exchange(host, port, garbage)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert (await http_request(host, port, "GET", "/hello")).status == 200


async def test_client_that_vanishes_mid_request_does_not_kill_the_server(
    served: tuple[AdminServer, str, int],
) -> None:
    _, host, port = served
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\npartial")
    await stream.aclose()
    assert (await http_request(host, port, "GET", "/hello")).status == 200


async def test_slow_head_times_out_with_408() -> None:
    server = build_server(read_timeout=0.2)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run)
        answer = await raw_exchange(host, port, b"GET /hello HTTP/1.1\r\nhost: x\r\n", eof=False)
        assert answer.startswith(b"HTTP/1.1 408 ")
        nursery.cancel_scope.cancel()


async def test_expect_100_continue_gets_an_interim_answer(served: tuple[AdminServer, str, int]) -> None:
    _, host, port = served
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n"
            b"content-type: application/json\r\n\r\n"
        )
        with trio.fail_after(10):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"{}")
        with trio.fail_after(10):
            final = await stream.receive_some(65536)
        assert final.startswith(b"HTTP/1.1 200 ")


async def test_close_drains_in_flight_requests_and_stops_accepting() -> None:
    server = build_server()
    started, release = trio.Event(), trio.Event()

    @server.route("GET", "/slow")
    async def slow(_request: Request) -> Response:
        started.set()
        await release.wait()
        return Response.text("done")

    responses: list[tuple[int, str | None, str]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(server.run)
            idle = HttpConnection(host, port)
            await idle.connect()
            await idle.request("GET", "/hello")  # leaves an idle keep-alive connection open

            async def call_slow() -> None:
                response = await http_request(host, port, "GET", "/slow")
                responses.append((response.status, response.header("connection"), response.text()))

            nursery.start_soon(call_slow)
            await started.wait()
            server.close(grace=5)
            release.set()
            # run() returns only once the idle connection was closed and /slow was answered.
        await idle.aclose()
    assert responses == [(200, "close", "done")]
    with pytest.raises(OSError):
        await trio.open_tcp_stream(host, port)


async def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    server = build_server(idle_timeout=0.2)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run)
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            with trio.fail_after(10):
                for _ in range(1000):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break  # the server closed the idle connection
                    received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        nursery.cancel_scope.cancel()


async def test_connection_cap_applies_back_pressure_instead_of_failing() -> None:
    server = build_server(max_connections=1)
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run)
        first = HttpConnection(host, port)
        await first.request("GET", "/hello")  # holds the only slot while idle

        async def second() -> None:
            assert (await http_request(host, port, "GET", "/hello")).status == 200
            done.set()

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert not done.is_set()  # waiting in the backlog, not refused
        await first.aclose()
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
