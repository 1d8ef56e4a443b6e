"""PushServer's trio shell over in-memory WebSockets under a mock clock: debounce, subscription checks,
proxy identities and status."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

from istiod_lite.push.delta import version_of
from istiod_lite.push.metrics import PushMetrics
from istiod_lite.push.server import PushServer
from istiod_lite.push.status import SyncState
from meshcore.push.protocol import Ack, Nack, Push, Subscribe, decode, encode, make_push
from meshcore.telemetry.metrics import Registry


@attrs.frozen
class Caller:
    node: str


async def _connect(
    nursery: trio.Nursery, server: PushServer, node: str
) -> trio_websocket.WebSocketConnection:
    """A raw proxy connection to ``server.handler``, as the control server would mount it."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def accept() -> None:
        request = await trio_websocket.wrap_server_stream(nursery, server_stream)
        ws = await request.accept()
        await server.handler(ws, Caller(node=node))

    nursery.start_soon(accept)
    return await trio_websocket.wrap_client_stream(
        nursery, client_stream, "istiod", "/v1/xds"  # type: ignore[arg-type]  # any trio Stream works
    )


async def _push(ws: trio_websocket.WebSocketConnection) -> Push:
    with trio.fail_after(5):
        message = decode(await ws.get_message())
    assert isinstance(message, Push)
    return message


async def _ack(ws: trio_websocket.WebSocketConnection, push: Push) -> None:
    await ws.send_message(encode(Ack(type=push.type, nonce=push.nonce, version=push.version)))


async def test_a_burst_of_publishes_becomes_one_push(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        server = PushServer(debounce=0.1, max_delay=1.0)
        await nursery.start(server.run)
        server.publish({"service": {"a": {"port": 1}}})
        ws = await _connect(nursery, server, "node-a")
        await ws.send_message(encode(Subscribe(types=("service",))))
        first = await _push(ws)
        assert first.full and first.upserts() == {"a": {"port": 1}}
        await _ack(ws, first)

        for port in range(2, 7):  # five edits 20 ms apart: one quiet period after the last
            server.publish({"service": {"a": {"port": port}}})
            await trio.sleep(0.02)
        update = await _push(ws)
        assert (update.full, update.upserts(), update.version) == (False, {"a": {"port": 6}}, version_of(
            {"a": {"port": 6}}
        ))
        assert server.stats.catalog_updates == 2 and server.stats.pushes == 2
        await _ack(ws, update)
        with trio.move_on_after(5):
            await ws.get_message()
            pytest.fail("nothing else should be pushed")
        nursery.cancel_scope.cancel()


async def test_a_steady_trickle_of_changes_still_goes_out_every_max_delay(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        server = PushServer(debounce=0.1, max_delay=1.0)
        await nursery.start(server.run)
        for step in range(100):  # a change every 50 ms for 5 s: never quiet for 100 ms
            server.publish({"service": {"a": {"step": step}}})
            await trio.sleep(0.05)
        assert server.stats.catalog_updates == 4  # one per second of max_delay, at 1, 2, 3 and 4 s
        await trio.sleep(0.2)  # the trickle stopped: the last changes go out after the quiet period
        assert server.stats.catalog_updates == 5
        assert server.catalog()["service"].resources == {"a": {"step": 99}}
        nursery.cancel_scope.cancel()


async def test_publishing_the_same_content_again_pushes_nothing(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        server = PushServer()
        await nursery.start(server.run)
        server.publish({"service": {"a": {"port": 1}}, "workload": {}})
        await trio.sleep(1)
        before = server.catalog()
        server.publish({"service": {"a": {"port": 1}}})
        await trio.sleep(1)
        assert server.catalog() == before and server.stats.catalog_updates == 1
        nursery.cancel_scope.cancel()


async def test_status_per_proxy_and_type_with_nack_error_and_second_connections(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        registry = Registry()
        server = PushServer(types=["service", "workload"], metrics=PushMetrics(registry))
        await nursery.start(server.run)
        server.publish({"service": {"a": {"port": 1}}, "workload": {}})
        await trio.sleep(0.5)  # published at 0.1 s; both proxies ACK at 0.5 s: convergence 0.4 s
        a = await _connect(nursery, server, "node-a")
        a2 = await _connect(nursery, server, "node-a")
        for ws in (a, a2):
            await ws.send_message(encode(Subscribe(types=("service",))))
            await _ack(ws, await _push(ws))
        await a.send_message(encode(Subscribe(types=("workload",))))  # a later subscribe adds a type
        workload = await _push(a)
        assert workload.type == "workload" and workload.full
        await a.send_message(encode(Nack(type="workload", nonce=workload.nonce, error="no thanks")))
        await trio.sleep(0.1)

        rows = {(row.proxy, row.type): row for row in server.status()}
        assert sorted(rows) == [("node-a", "service"), ("node-a", "workload"), ("node-a#2", "service")]
        assert rows["node-a", "service"].state is SyncState.SYNCED
        assert rows["node-a", "workload"].state is SyncState.NACKED
        assert rows["node-a", "workload"].nack_error == "no thanks"
        assert rows["node-a", "workload"].sent_nonce == workload.nonce
        assert rows["node-a", "workload"].to_json()["state"] == "NACKED"
        assert server.stats.connected == 2 and server.stats.nacks == 1 and server.stats.acks == 2
        exposed = registry.expose().splitlines()
        for line in (
            "pilot_xds 2",
            'pilot_xds_pushes{type="service"} 2',
            'pilot_xds_pushes{type="workload"} 1',
            'pilot_total_xds_rejects{type="workload"} 1',
            'pilot_proxy_convergence_time_bucket{type="service",le="0.25"} 0',
            'pilot_proxy_convergence_time_bucket{type="service",le="0.5"} 2',
            'pilot_proxy_convergence_time_count{type="service"} 2',
        ):
            assert line in exposed, line

        await a2.aclose()
        await trio.sleep(0.1)
        assert {row.proxy for row in server.status()} == {"node-a"} and server.stats.connected == 1
        assert "pilot_xds 1" in registry.expose().splitlines()
        nursery.cancel_scope.cancel()


async def test_publishing_a_type_the_server_does_not_push_is_a_programming_error() -> None:
    server = PushServer(types=["service"])
    with pytest.raises(ValueError, match=r"publish of types \['route'\]"):
        server.publish({"service": {}, "route": {}})
    assert server.catalog() == {}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (encode(Subscribe(types=("route",))), "unknown resource types ['route']"),
        (encode(make_push("service", "v1", "n", {}, full=True)), "proxies answer pushes"),
        ('{"kind": "ack"}', "ack message: missing field"),
        (encode(Ack(type="workload", nonce="n", version="v")), "never subscribed"),
    ],
)
async def test_a_proxy_that_breaks_the_protocol_is_disconnected_with_the_reason(
    autojump_clock: Any, message: str, reason: str
) -> None:
    async with trio.open_nursery() as nursery:
        server = PushServer(types=["service", "workload"])
        await nursery.start(server.run)
        ws = await _connect(nursery, server, "node-a")
        await ws.send_message(message)
        with pytest.raises(trio_websocket.ConnectionClosed) as info, trio.fail_after(5):
            await ws.get_message()
        close = info.value.reason
        assert close is not None and close.code == 1008
        assert close.reason is not None and reason in close.reason
        await trio.sleep(0.1)
        assert server.status() == [] and server.stats.connected == 0
        nursery.cancel_scope.cancel()
