"""PushClient's trio shell over in-memory streams with a scripted istiod_lite, under a mock clock:
reconnect backoff, NACK keeps state, serving through an outage, resync on reconnect."""

from __future__ import annotations

import errno
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

from meshcore.push.backoff import Backoff
from meshcore.push.client import InvalidPushUrl, PushClient, parse_push_url
from meshcore.push.protocol import Ack, Nack, Subscribe, decode, encode, make_push


@attrs.define
class Recorder:
    state: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        if any(body == "invalid" for body in upserts.values()):
            raise ValueError("body 'invalid' refused")
        table = {} if full else dict(self.state.get(type_name, {}))
        for key in removed:
            del table[key]
        table.update(upserts)
        self.state[type_name] = table


@attrs.define
class ScriptedIstiod:
    """Accepts in-memory WebSocket connections (or refuses them) and hands them to the test."""

    nursery: trio.Nursery
    refuse: bool = False
    dial_times: list[float] = attrs.field(factory=list)
    send: trio.MemorySendChannel[tuple[trio_websocket.WebSocketConnection, dict[bytes, bytes]]] = attrs.field(
        init=False
    )
    accepted: trio.MemoryReceiveChannel[tuple[trio_websocket.WebSocketConnection, dict[bytes, bytes]]] = (
        attrs.field(init=False)
    )

    def __attrs_post_init__(self) -> None:
        self.send, self.accepted = trio.open_memory_channel(10)

    async def dial(self) -> trio.abc.Stream:
        self.dial_times.append(trio.current_time())
        if self.refuse:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._accept, server)
        return client

    async def _accept(self, stream: trio.abc.Stream) -> None:
        request = await trio_websocket.wrap_server_stream(self.nursery, stream)
        headers = dict(request.headers)
        ws = await request.accept()
        await self.send.send((ws, headers))


def _client(istiod: ScriptedIstiod, applier: Recorder, **kwargs: Any) -> PushClient:
    return PushClient(
        "ws://istiod.istio-system:15012/v1/xds",
        "node-token",
        None,
        ["service"],
        applier,
        dialer=istiod.dial,
        backoff=Backoff(initial=0.5, maximum=4.0),
        **kwargs,
    )


def _synced(client: PushClient) -> bool:
    """Read through a call so mypy does not carry a narrowed property value across awaits."""
    return client.synced


async def _expect(ws: trio_websocket.WebSocketConnection) -> Any:
    with trio.fail_after(5):
        return decode(await ws.get_message())


async def test_reconnect_attempts_back_off_exponentially_up_to_the_cap(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        istiod = ScriptedIstiod(nursery, refuse=True)
        client = _client(istiod, Recorder())
        start = trio.current_time()
        await nursery.start(client.run)
        await trio.sleep(20)
        assert [round(t - start, 6) for t in istiod.dial_times] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
        assert not client.connected and client.last_connect_error is not None
        assert "connection refused" in client.last_connect_error
        nursery.cancel_scope.cancel()


async def test_sync_nack_outage_and_resync(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        istiod = ScriptedIstiod(nursery)
        applier = Recorder()
        client = _client(istiod, applier)
        await nursery.start(client.run)

        ws, headers = await istiod.accepted.receive()
        assert headers[b"authorization"] == b"Bearer node-token"
        assert await _expect(ws) == Subscribe(types=("service",))
        await ws.send_message(encode(make_push("service", "v1", "n1", {"a": 1, "b": 2}, full=True)))
        assert await _expect(ws) == Ack(type="service", nonce="n1", version="v1")
        with trio.fail_after(1):
            await client.wait_synced()

        await ws.send_message(encode(make_push("service", "v2", "n2", {"a": "invalid"}, ["b"], full=False)))
        refused = Nack(type="service", nonce="n2", error="ValueError: body 'invalid' refused")
        assert await _expect(ws) == refused
        assert applier.state == {"service": {"a": 1, "b": 2}}

        # istiod_lite goes away for a while: the proxy keeps serving what it had
        istiod.refuse = True
        await ws.aclose()
        with trio.fail_after(1):
            await client.wait_disconnected()
        await trio.sleep(10)
        assert applier.state == {"service": {"a": 1, "b": 2}}
        assert not _synced(client) and client.session.versions == {"service": "v1"}

        istiod.refuse = False
        with trio.fail_after(10):
            ws, _ = await istiod.accepted.receive()
        assert await _expect(ws) == Subscribe(types=("service",))
        await ws.send_message(encode(make_push("service", "v3", "n1", {"a": 3}, full=True)))
        assert await _expect(ws) == Ack(type="service", nonce="n1", version="v3")
        assert applier.state == {"service": {"a": 3}}  # the full state replaced everything
        assert _synced(client) and client.connects == 2
        nursery.cancel_scope.cancel()


async def test_a_good_connection_resets_the_backoff(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        istiod = ScriptedIstiod(nursery, refuse=True)
        client = _client(istiod, Recorder())
        await nursery.start(client.run)
        await trio.sleep(7)  # attempts at 0, 0.5, 1.5, 3.5: the next delay would be 4 s
        istiod.refuse = False
        ws, _ = await istiod.accepted.receive()
        await _expect(ws)
        await ws.send_message(encode(make_push("service", "v1", "n1", {}, full=True)))
        await _expect(ws)
        istiod.refuse = True
        lost = trio.current_time()
        await ws.aclose()
        await trio.sleep(2)
        assert [round(t - lost, 6) for t in istiod.dial_times if t > lost] == [0.5, 1.5]
        nursery.cancel_scope.cancel()


async def test_a_server_that_breaks_the_protocol_is_dropped_and_the_state_kept(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        istiod = ScriptedIstiod(nursery)
        applier = Recorder()
        client = _client(istiod, applier)
        await nursery.start(client.run)
        ws, _ = await istiod.accepted.receive()
        await _expect(ws)
        await ws.send_message(encode(make_push("service", "v1", "n1", {"a": 1}, full=True)))
        await _expect(ws)
        await ws.send_message(encode(Ack(type="service", nonce="n1", version="v1")))
        with trio.fail_after(5):
            ws, _ = await istiod.accepted.receive()  # the client hung up and came back
        assert client.last_connect_error is not None and "it only pushes" in client.last_connect_error
        assert applier.state == {"service": {"a": 1}}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("url", "host", "port", "resource", "header"),
    [
        ("wss://127.0.0.1:15012/v1/xds", "127.0.0.1", 15012, "/v1/xds", "127.0.0.1:15012"),
        ("ws://istiod/v1/xds?node=a", "istiod", 80, "/v1/xds?node=a", "istiod:80"),
        ("wss://[::1]/v1/xds", "::1", 443, "/v1/xds", "[::1]:443"),
    ],
)
def test_push_urls_name_where_to_connect(url: str, host: str, port: int, resource: str, header: str) -> None:
    target = parse_push_url(url)
    assert (target.host, target.port, target.resource, target.host_header) == (host, port, resource, header)


@pytest.mark.parametrize(
    ("url", "tls", "expected"),
    [
        ("http://istiod:15012/v1/xds", False, "not a WebSocket URL"),
        ("wss://istiod:99999/v1/xds", True, "bad port"),
        ("wss://istiod:15012/v1/xds", False, "no SSLContext was given"),
        ("ws://istiod:15012/v1/xds", True, "an SSLContext was given"),
    ],
)
def test_bad_push_urls_are_refused_with_the_expected_shape(url: str, tls: bool, expected: str) -> None:
    import ssl

    context = ssl.create_default_context() if tls else None
    with pytest.raises(InvalidPushUrl, match=expected) as info:
        PushClient(url, "t", context, ["service"], Recorder())
    assert "wss://HOST:PORT/v1/xds" in str(info.value)
