"""HBONE over real loopback sockets: our pool (client) ↔ our server, mTLS 1.3 + HTTP/2 CONNECT.

Every bad-input case runs while a tunnel opened beforehand stays in use, and checks afterwards that
this tunnel and a brand-new one still carry data: one peer's mistake never costs other tunnels.
"""

from __future__ import annotations

import hashlib
import os
import random
import ssl
import struct

import pytest
import trio

from meshcore.hbone import (
    ConnectDenied,
    ConnectRejected,
    HandshakeFailed,
    HboneError,
    HbonePool,
    PoolKey,
    Respond,
    StreamReset,
)
from meshcore.hbone.connect import ConnectRequest
from meshcore.hbone.connection import HboneConnection
from tests.unit.meshcore.hbone.harness import Loopback, echo_once, loopback_mesh
from tests.unit.meshcore.hbone.pki import verify_one_of

MiB = 1024 * 1024


async def test_64_mib_each_way_arrives_intact() -> None:
    size = 64 * MiB
    block = random.Random(7).randbytes(MiB)
    async with loopback_mesh() as mesh:
        async with mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (response, stream):
            assert response.status == 200
            assert response.baggage == f"peer={mesh.client_id}"  # the destination saw our identity
            sent, received = hashlib.sha256(), hashlib.sha256()
            count = 0

            async def send() -> None:
                for i in range(size // MiB):
                    chunk = block[i:] + block[:i]  # every MiB differs, so reordering would show
                    sent.update(chunk)
                    await stream.send_all(chunk)
                await stream.send_eof()

            async def receive() -> None:
                nonlocal count
                while data := await stream.receive_some():
                    received.update(data)
                    count += len(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
        assert count == size
        assert received.hexdigest() == sent.hexdigest()


async def test_200_concurrent_streams_share_at_most_two_connections() -> None:
    async with loopback_mesh() as mesh:
        all_open = trio.Event()
        opened = 0
        results: list[bool] = []

        async def tunnel(i: int) -> None:
            nonlocal opened
            async with mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, stream):
                opened += 1
                if opened == 200:
                    all_open.set()
                await all_open.wait()  # hold every tunnel open at once
                payload = f"tunnel {i}".encode() * 10
                results.append(await echo_once(stream, payload) == payload)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(tunnel, i)
        assert results == [True] * 200
        assert mesh.server.stats.connections_accepted == 2
        assert mesh.pool.statistics().dials == 2


# -- bad input, each while an established tunnel keeps working ----------------------------------------


async def _still_serving(mesh: Loopback, survivor: trio.abc.Stream) -> None:
    assert await echo_once(survivor, b"still here") == b"still here"
    async with mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, fresh):
        assert await echo_once(fresh, b"fresh tunnel") == b"fresh tunnel"


async def test_plaintext_instead_of_tls_closes_only_that_connection() -> None:
    async with (
        loopback_mesh() as mesh,
        mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, survivor),
    ):
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096)):
            raw = await trio.open_tcp_stream(*mesh.server_address)
            async with raw:
                await raw.send_all(garbage)
                with trio.fail_after(5):
                    answer = await _read_until_closed(raw)
            assert b"HTTP/1.1 200" not in answer
        assert mesh.server.stats.handshakes_failed == 2
        await _still_serving(mesh, survivor)


async def test_tls_without_client_certificate_is_refused() -> None:
    async with (
        loopback_mesh() as mesh,
        mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, survivor),
    ):
        anonymous = mesh.pki.client_context(None)
        pool = HbonePool(lambda key: (anonymous, verify_one_of(key.destination_identities)))
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            with trio.fail_after(10), pytest.raises(HandshakeFailed, match="refused our certificate"):
                async with pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}"):
                    pass
            nursery.cancel_scope.cancel()
        assert mesh.server.stats.handshakes_failed == 1
        await _still_serving(mesh, survivor)


async def test_wrong_server_identity_is_refused_by_the_client() -> None:
    async with loopback_mesh() as mesh:
        key = PoolKey(mesh.client_id, (mesh.pki.spiffe("apps", "someone-else"),), *mesh.server_address)
        with pytest.raises(HboneError, match="someone-else"):
            async with mesh.pool.open(key, f"127.0.0.1:{mesh.echo_port}"):
                pass


async def test_http2_garbage_after_handshake_costs_only_that_connection() -> None:
    async with (
        loopback_mesh() as mesh,
        mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, survivor),
    ):
        tls = await _tls_connect(mesh)
        async with tls:
            # the preface, an empty SETTINGS, then a DATA frame on stream 0 (forbidden)
            settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            data_on_stream_0 = b"\x00\x00\x04\x00\x00\x00\x00\x00\x00junk"
            await tls.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + data_on_stream_0)
            with trio.fail_after(5):
                answer = await _read_until_closed(tls)
        # h2 answers with SETTINGS and then a GOAWAY frame (type 7) before closing
        assert _frame_types(answer) and 7 in _frame_types(answer)
        await _still_serving(mesh, survivor)


async def test_bad_requests_are_answered_on_their_own_stream() -> None:
    """Non-CONNECT, foreign IP, proxy ports, a 1 MiB header block: each gets its status on a
    connection that keeps carrying a good tunnel."""
    async with loopback_mesh() as mesh:
        tls = await _tls_connect(mesh)
        connection = HboneConnection(tls, client_side=True, peer="server")
        # h2's pure-Python Huffman *encoder* needs ~50 s for 1 MiB (decoding it takes 0.1 s), so this
        # test client sends literals; the server's cost is what matters and is the same either way.
        encode = connection.h2.encoder.encode
        connection.h2.encoder.encode = lambda headers, huffman=True: encode(headers, huffman=False)  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(connection.run)
            good = await connection.open_stream(
                [(":method", "CONNECT"), (":authority", f"127.0.0.1:{mesh.echo_port}")]
            )
            assert good.response is not None and good.response.status == 200
            cases = [
                (
                    [
                        (":method", "GET"),
                        (":scheme", "https"),
                        (":path", "/"),
                        (":authority", "127.0.0.1:80"),
                    ],
                    400,
                ),
                ([(":method", "CONNECT"), (":authority", "10.9.9.9:80")], 400),
                ([(":method", "CONNECT"), (":authority", "127.0.0.1:15008")], 400),
                ([(":method", "CONNECT"), (":authority", "127.0.0.1:15006")], 503),
                ([(":method", "CONNECT"), (":authority", "127.0.0.1:80"), ("x-big", "a" * MiB)], 400),
            ]
            for headers, status in cases:
                with trio.fail_after(10):
                    stream = await connection.open_stream(headers)
                assert stream.response is not None and stream.response.status == status, headers[:2]
                await stream.aclose()
                assert (
                    await echo_once(good, b"after " + headers[0][1].encode())
                    == b"after " + headers[0][1].encode()
                )
            await good.aclose()
            assert connection.usable
            await connection.aclose()
        assert mesh.server.stats.streams_rejected == len(cases)
        assert mesh.server.stats.connections_accepted == 1


async def test_pool_maps_statuses_to_typed_errors() -> None:
    async def deny_some(request: ConnectRequest, respond: Respond) -> None:
        await respond(401 if request.target_port == 1 else 503)

    async with loopback_mesh(handler=deny_some) as mesh:
        with pytest.raises(ConnectDenied) as denied:
            async with mesh.pool.open(mesh.key(), "127.0.0.1:1"):
                pass
        assert denied.value.status == 401 and denied.value.response_flag == "DENY"
        with pytest.raises(ConnectRejected) as unavailable:
            async with mesh.pool.open(mesh.key(), "127.0.0.1:2"):
                pass
        assert unavailable.value.status == 503
        with pytest.raises(ConnectRejected) as foreign:
            async with mesh.pool.open(mesh.key(), "10.9.9.9:80"):
                pass
        assert foreign.value.status == 400
        assert "does not serve" in str(foreign.value)
        assert mesh.pool.statistics().dials == 1  # all on one connection


async def test_tunnel_reset_mid_transfer_resets_the_app_connection() -> None:
    async with (
        loopback_mesh() as mesh,
        mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, survivor),
    ):
        async with mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.sink_port}") as (_, stream):
            await stream.send_all(b"x" * MiB)
            await stream.reset()
        with trio.fail_after(5):
            await mesh.sink_events.reset_seen.wait()
        assert mesh.sink_events.resets == 1
        await _still_serving(mesh, survivor)


async def test_app_reset_reaches_the_client_as_stream_reset() -> None:
    async def reset_app(stream: trio.SocketStream) -> None:
        await stream.receive_some(10)
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    async with loopback_mesh() as mesh, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, reset_app, 0)
        port = listeners[0].socket.getsockname()[1]
        async with mesh.pool.open(mesh.key(), f"127.0.0.1:{port}") as (_, stream):
            await stream.send_all(b"hello")
            with trio.fail_after(5), pytest.raises(StreamReset):
                while await stream.receive_some():
                    pass
        nursery.cancel_scope.cancel()


async def test_half_close_travels_both_ways() -> None:
    async with (
        loopback_mesh() as mesh,
        mesh.pool.open(mesh.key(), f"127.0.0.1:{mesh.echo_port}") as (_, stream),
    ):
        await stream.send_all(b"request")
        await stream.send_eof()  # echo app sees EOF, answers, then half-closes back
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        assert data == b"request"


async def test_unreachable_app_answers_503() -> None:
    async with loopback_mesh() as mesh:
        with pytest.raises(ConnectRejected) as info:
            async with mesh.pool.open(mesh.key(), "127.0.0.1:1"):
                pass
        assert info.value.status == 503


# -- helpers --------------------------------------------------------------------------------------------


async def _tls_connect(mesh: Loopback) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(*mesh.server_address)
    tls = trio.SSLStream(tcp, mesh.client_ctx, server_hostname=None, https_compatible=True)
    await tls.do_handshake()
    return tls


async def _read_until_closed(stream: trio.abc.Stream) -> bytes:
    data = b""
    for _ in range(10_000):
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("peer kept sending")


def _frame_types(data: bytes) -> list[int]:
    types, offset = [], 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        types.append(data[offset + 3])
        offset += 9 + length
    return types


async def test_ipv6_tunnel_with_bracketed_authority() -> None:
    async with loopback_mesh(host="::1") as mesh:
        assert mesh.key().address.startswith("[::1]:")
        async with mesh.pool.open(mesh.key(), f"[::1]:{mesh.echo_port}", forwarded_for=("::1", 5000)) as (
            response,
            stream,
        ):
            assert response.status == 200
            assert await echo_once(stream, b"over v6") == b"over v6"
