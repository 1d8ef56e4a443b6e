"""Drain: accepting stops at once, open connections are waited for (and only them)."""

from __future__ import annotations

import trio
import trio.testing

from ztunnel.drain import Drain


async def test_request_cancels_every_accept_scope_and_future_ones() -> None:
    drain = Drain()
    stopped: list[str] = []

    async def accept_loop(name: str) -> None:
        with drain.accepting():
            await trio.Event().wait()
        stopped.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, "a")
        nursery.start_soon(accept_loop, "b")
        await trio.testing.wait_all_tasks_blocked()
        drain.request()
    assert sorted(stopped) == ["a", "b"]
    with drain.accepting() as late:
        await trio.lowlevel.checkpoint()
    assert late.cancelled_caught


async def test_wait_idle_returns_when_the_last_connection_ends(autojump_clock: trio.abc.Clock) -> None:
    drain = Drain()
    await drain.wait_idle()  # nothing open: immediate
    finished_at: list[float] = []

    async def connection(seconds: float) -> None:
        with drain.connection():
            await trio.sleep(seconds)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection, 1)
        nursery.start_soon(connection, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert drain.active == 2
        start = trio.current_time()
        await drain.wait_idle()
        finished_at.append(trio.current_time() - start)
    assert finished_at == [3]
    assert drain.active == 0


async def test_deadline_bounds_the_wait(autojump_clock: trio.abc.Clock) -> None:
    drain = Drain()
    async with trio.open_nursery() as nursery:

        async def stuck() -> None:
            with drain.connection():
                await trio.sleep_forever()

        nursery.start_soon(stuck)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(5) as scope:
            await drain.wait_idle()
        assert scope.cancelled_caught and drain.active == 1
        nursery.cancel_scope.cancel()
    assert drain.active == 0
