"""HbonePool policy (DESIGN §3) over real TLS on memory streams, under a mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshcore.hbone import ConnectFailed, ConnectTimeout, HandshakeFailed, HbonePool, PoolKey
from meshcore.hbone.pool import CONNECT_TIMEOUT, IDLE_TIMEOUT, MAX_STREAMS_PER_CONNECTION, tcp_connector
from tests.unit.meshcore.hbone.harness import echo_once, memory_mesh
from tests.unit.meshcore.hbone.pki import Pki, verify_one_of

AUTHORITY = "10.0.0.5:8080"


async def test_idle_connection_is_released_after_five_minutes(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh() as mesh:
        async with mesh.pool.open(mesh.key, AUTHORITY) as (_, stream):
            assert await echo_once(stream, b"hi") == b"hi"
        await trio.sleep(IDLE_TIMEOUT - 1)
        assert mesh.pool.statistics().connections == 1
        # reuse before the deadline restarts the idle timer
        async with mesh.pool.open(mesh.key, AUTHORITY) as (_, stream):
            assert await echo_once(stream, b"again") == b"again"
        assert len(mesh.dials) == 1
        await trio.sleep(IDLE_TIMEOUT - 1)
        assert mesh.pool.statistics().connections == 1
        await trio.sleep(2)
        assert mesh.pool.statistics().connections == 0
        async with mesh.pool.open(mesh.key, AUTHORITY) as (_, stream):  # a new dial after release
            assert await echo_once(stream, b"new") == b"new"
        assert len(mesh.dials) == 2


async def test_busy_connection_is_not_released(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh() as mesh, mesh.pool.open(mesh.key, AUTHORITY) as (_, stream):
        await trio.sleep(3 * IDLE_TIMEOUT)
        assert await echo_once(stream, b"alive") == b"alive"
        assert mesh.pool.statistics().connections == 1


async def test_concurrent_opens_share_one_handshake(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh(connector_delay=1.0) as mesh:
        results: list[bytes] = []

        async def one(i: int) -> None:
            async with mesh.pool.open(mesh.key, AUTHORITY) as (_, stream):
                results.append(await echo_once(stream, b"%d" % i))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert sorted(results) == sorted(b"%d" % i for i in range(50))
        assert len(mesh.dials) == 1


async def test_a_new_connection_opens_at_the_stream_cap(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh() as mesh:
        release = trio.Event()
        opened = 0

        async def hold() -> None:
            nonlocal opened
            async with mesh.pool.open(mesh.key, AUTHORITY):
                opened += 1
                await release.wait()

        async with trio.open_nursery() as nursery:
            for _ in range(MAX_STREAMS_PER_CONNECTION + 1):
                nursery.start_soon(hold)
            await trio.sleep(5)
            assert opened == MAX_STREAMS_PER_CONNECTION + 1
            stats = mesh.pool.statistics()
            assert (stats.connections, stats.streams) == (2, MAX_STREAMS_PER_CONNECTION + 1)
            release.set()


async def test_distinct_keys_never_share_a_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh() as mesh:
        other = PoolKey(mesh.key.source_identity, mesh.key.destination_identities, "10.0.0.6")
        for key in (mesh.key, other, mesh.key, other):
            async with mesh.pool.open(key, AUTHORITY) as (_, stream):
                assert await echo_once(stream, b"k") == b"k"
        assert [dial.host for dial in mesh.dials] == ["10.0.0.5", "10.0.0.6"]


async def test_connect_timeout_names_the_hbone_port(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_mesh(connector_delay=3600) as mesh:
        start = trio.current_time()
        with pytest.raises(ConnectTimeout) as info:
            async with mesh.pool.open(mesh.key, AUTHORITY):
                pass
        assert trio.current_time() - start == pytest.approx(CONNECT_TIMEOUT)
        assert "15008" in str(info.value) and "10.0.0.5" in str(info.value)
        assert info.value.response_flag == "CONNECT"


async def test_a_failed_dial_fails_every_waiter_once(autojump_clock: trio.testing.MockClock) -> None:
    attempts = 0

    async def refusing(host: str, port: int) -> trio.abc.Stream:
        nonlocal attempts
        attempts += 1
        await trio.sleep(1)
        raise ConnectionRefusedError(111, "Connection refused")

    pki = Pki()
    ctx = pki.client_context(pki.spiffe("a", "b"))
    pool = HbonePool(lambda key: (ctx, verify_one_of(key.destination_identities)), connector=refusing)
    errors: list[str] = []

    async def one() -> None:
        try:
            async with pool.open(PoolKey("id", ("peer",), "10.0.0.7"), AUTHORITY):
                pass
        except ConnectFailed as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as openers:
            for _ in range(20):
                openers.start_soon(one)
        nursery.cancel_scope.cancel()
    assert attempts == 1
    assert len(errors) == 20 and all("15008" in e and "refused" in e.lower() for e in errors)


async def test_unexpected_server_identity_is_a_handshake_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_mesh() as mesh:
        key = PoolKey(mesh.key.source_identity, ("spiffe://cluster.local/ns/apps/sa/other",), "10.0.0.5")
        with pytest.raises(HandshakeFailed, match="sa/other"):
            async with mesh.pool.open(key, AUTHORITY):
                pass
        assert mesh.pool.statistics().connections == 0


async def test_a_draining_server_refuses_and_the_pool_moves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_mesh() as mesh:
        async with mesh.pool.open(mesh.key, AUTHORITY) as (_, first):
            mesh.server.drain()  # GOAWAY: the open tunnel continues, new ones go elsewhere
            await trio.sleep(1)
            assert await echo_once(first, b"during drain") == b"during drain"
            async with mesh.pool.open(mesh.key, AUTHORITY) as (_, second):
                assert await echo_once(second, b"second") == b"second"
        assert len(mesh.dials) == 2


async def test_tcp_connector_binds_the_source_address() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        client = await tcp_connector("127.0.0.3")("127.0.0.1", port)
        server = await listeners[0].accept()
        async with client, server:
            assert server.socket.getpeername()[0] == "127.0.0.3"
