"""The HTTP/2 driver and tunnel streams over memory streams: flow control, resets, half-close,
GOAWAY and keepalive, all under a mock clock."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import hyperframe.frame
import pytest
import trio
import trio.testing

from meshcore.h2compat import FrameLengthGuard
from meshcore.hbone.connection import (
    CONNECTION_WINDOW,
    PING_INTERVAL,
    PING_TIMEOUT,
    SERVER_MAX_CONCURRENT_STREAMS,
    STREAM_WINDOW,
    HboneConnection,
)
from meshcore.hbone.errors import ConnectionLost, StreamReset
from tests.unit.meshcore.hbone.harness import connection_pair, open_pair

MiB = 1024 * 1024


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk
        data += chunk
    return bytes(data)


async def test_data_flows_and_half_close_keeps_the_other_direction_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair() as pair:
        client, server = await open_pair(pair)
        await client.send_all(b"ping")
        await client.send_eof()
        assert await _read_exactly(server, 4) == b"ping"
        assert await server.receive_some() == b""
        await server.send_all(b"pong")  # the server may still answer after the client's END_STREAM
        await server.send_eof()
        assert await _read_exactly(client, 4) == b"pong"
        assert await client.receive_some() == b""
        assert client.finished and server.finished
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"late")


async def test_unread_data_holds_the_stream_window_until_consumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair() as pair:
        client, server = await open_pair(pair)
        payload = b"x" * (2 * STREAM_WINDOW)
        with trio.move_on_after(30):
            await client.send_all(payload)
        # Nothing was read, so nothing was acknowledged: the sender stopped at the stream window.
        assert client.bytes_sent == STREAM_WINDOW
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, payload[client.bytes_sent :])
            received = await _read_exactly(server, len(payload))
        assert received == payload
        assert client.bytes_sent == len(payload)


async def test_connection_window_caps_unread_data_across_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair() as pair:
        tunnels = [await open_pair(pair) for _ in range(5)]
        async with trio.open_nursery() as nursery:
            for client, _ in tunnels:
                nursery.start_soon(client.send_all, b"y" * STREAM_WINDOW)
            await trio.sleep(30)
            # 5 streams x 4 MiB windows, but the 16 MiB connection window binds first
            assert sum(client.bytes_sent for client, _ in tunnels) == CONNECTION_WINDOW
            for _, server in tunnels:  # reading one stream frees connection window for the rest
                nursery.start_soon(_read_exactly, server, STREAM_WINDOW)
        assert sum(client.bytes_sent for client, _ in tunnels) == 5 * STREAM_WINDOW


async def test_peer_reset_surfaces_as_stream_reset(autojump_clock: trio.testing.MockClock) -> None:
    async with connection_pair() as pair:
        client, server = await open_pair(pair)
        await client.send_all(b"partial")
        await server.reset(h2.errors.ErrorCodes.CONNECT_ERROR)
        with pytest.raises(StreamReset) as info:
            for _ in range(10):
                await client.receive_some()
        assert info.value.error_code == h2.errors.ErrorCodes.CONNECT_ERROR
        with pytest.raises(StreamReset):
            await client.send_all(b"more")


async def test_aclose_before_the_end_resets_with_cancel(autojump_clock: trio.testing.MockClock) -> None:
    async with connection_pair() as pair:
        client, server = await open_pair(pair)
        await client.send_all(b"abc")
        await client.aclose()
        assert await server.receive_some() == b"abc"
        with pytest.raises(StreamReset) as info:
            await server.receive_some()
        assert info.value.error_code == h2.errors.ErrorCodes.CANCEL
        assert pair.client.open_streams == 0


async def test_closing_with_unread_data_returns_the_connection_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair() as pair:
        for _ in range(6):  # 6 x 4 MiB unread would exceed 16 MiB if the window leaked
            client, server = await open_pair(pair)
            await client.send_all(b"z" * STREAM_WINDOW)
            await trio.sleep(1)
            await server.aclose()
            await client.aclose()
        client, server = await open_pair(pair)
        with trio.fail_after(10):
            await client.send_all(b"w" * MiB)
            assert len(await _read_exactly(server, MiB)) == MiB


async def test_goaway_drains_old_streams_and_refuses_new_ones(autojump_clock: trio.testing.MockClock) -> None:
    async with connection_pair() as pair:
        client, server = await open_pair(pair)
        pair.server.drain()
        await trio.sleep(1)
        assert not pair.client.usable
        with pytest.raises(ConnectionLost, match="GOAWAY"):
            await pair.client.open_stream([(":method", "CONNECT"), (":authority", "10.0.0.5:80")])
        await client.send_all(b"still flowing")  # streams opened before the GOAWAY finish normally
        assert await _read_exactly(server, 13) == b"still flowing"


async def test_keepalive_pings_keep_a_quiet_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with connection_pair() as pair:
        await trio.sleep(10 * PING_INTERVAL)
        assert pair.client.usable and pair.server.usable


async def test_unanswered_ping_ends_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    client_end, silent_end = trio.testing.memory_stream_pair()
    connection = HboneConnection(client_end, client_side=True, peer="silent")
    start = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def swallow() -> None:
            while await silent_end.receive_some():
                pass

        nursery.start_soon(swallow)
        await connection.run()
        nursery.cancel_scope.cancel()
    failure = connection.failure()
    assert failure is not None and "PING" in str(failure)
    assert trio.current_time() - start == pytest.approx(PING_INTERVAL + PING_TIMEOUT)


async def test_peer_disconnect_fails_open_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with connection_pair() as pair:
        client, _ = await open_pair(pair)
        await pair.server.aclose()
        with pytest.raises(ConnectionLost):
            for _ in range(10):
                await client.receive_some()


def test_data_frame_repr_does_not_hex_encode_the_payload() -> None:
    frame = hyperframe.frame.DataFrame(1, data=b"\xab" * 4096)
    assert "ab" not in repr(frame).lower().split(":", 1)[1]
    assert "4096 bytes" in repr(frame)


async def test_past_the_peer_stream_limit_open_is_refused_not_broken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair() as pair:
        tunnels = [await open_pair(pair) for _ in range(SERVER_MAX_CONCURRENT_STREAMS)]
        with pytest.raises(StreamReset) as info:
            await pair.client.open_stream([(":method", "CONNECT"), (":authority", "10.0.0.5:80")])
        assert info.value.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert not pair.client.usable  # the pool will dial another connection
        client, server = tunnels[0]
        await client.send_all(b"open streams carry on")
        assert await _read_exactly(server, 21) == b"open streams carry on"


def test_frame_guard_skips_bodies_across_chunks_and_flags_the_first_oversize_header() -> None:
    guard = FrameLengthGuard(1 * MiB, server_side=True)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings = hyperframe.frame.SettingsFrame(0).serialize()
    data = hyperframe.frame.DataFrame(1, data=b"x" * 1000).serialize()
    stream = preface + settings + data
    for size in (1, 7, 9, 1000):  # every split of the byte stream is seen the same way
        chunked = FrameLengthGuard(1 * MiB, server_side=True)
        assert all(chunked.oversize(stream[i:i + size]) is None for i in range(0, len(stream), size))
    assert guard.oversize(stream) is None
    header = (2 * MiB).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01"  # DATA, stream 1, 2 MiB announced
    assert guard.oversize(header[:5]) is None  # not decided before the whole 9-byte header is there
    assert guard.oversize(header[5:]) == 2 * MiB


async def test_an_oversize_frame_header_gets_goaway_before_its_body_is_sent() -> None:
    """h2 alone would wait for the announced 2 MiB; the connection refuses at the 9-byte header."""
    peer_end, server_end = trio.testing.memory_stream_pair()
    server = HboneConnection(server_end, client_side=False, peer="client", on_request=lambda s, h: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        peer.initiate_connection()
        await peer_end.send_all(peer.data_to_send())
        await peer_end.send_all((2 * MiB).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01")
        goaway: list[h2.events.ConnectionTerminated] = []
        with trio.fail_after(5):
            while not goaway:
                chunk = await peer_end.receive_some(65536)
                assert chunk, "closed without a GOAWAY"
                events = peer.receive_data(chunk)
                goaway += [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway[0].error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
        nursery.cancel_scope.cancel()
