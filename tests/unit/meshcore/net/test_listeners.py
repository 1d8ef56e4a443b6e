"""Listeners shared between processes with SO_REUSEPORT, and the default that refuses sharing."""

from __future__ import annotations

import socket

import pytest
import trio

from meshcore.net.listeners import open_tcp_listeners


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_reuse_port_listeners_share_one_address_and_both_accept() -> None:
    port = free_port()
    first = await open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    second = await open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    accepted: list[int] = []
    all_accepted = trio.Event()

    async def accept(index: int, listener: trio.SocketListener) -> None:
        while True:
            stream = await listener.accept()
            accepted.append(index)
            if len(accepted) == 64:
                all_accepted.set()
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        for index, listeners in enumerate((first, second)):
            nursery.start_soon(accept, index, listeners[0])
        for _ in range(64):  # the kernel hashes each connection's 4-tuple onto one of the two sockets
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()
        with trio.fail_after(10):
            await all_accepted.wait()
        nursery.cancel_scope.cancel()
    assert set(accepted) == {0, 1}
    for listener in (*first, *second):
        await listener.aclose()


async def test_without_reuse_port_a_second_listener_is_refused() -> None:
    port = free_port()
    first = await open_tcp_listeners(port, host="127.0.0.1")
    with pytest.raises(OSError):
        await open_tcp_listeners(port, host="127.0.0.1")
    with pytest.raises(OSError):  # nor can a reuse-port socket join a listener that did not opt in
        await open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    for listener in first:
        await listener.aclose()
