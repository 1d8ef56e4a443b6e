"""The accept loop every ztunnel listener shares: one task per connection, stopped by a drain.

Listeners are either bound here (proxy mode: ``podIP:port``) or handed in already open (netns mode:
the capture code opens them inside the pod's namespace). Accepting runs inside
:meth:`~ztunnel.drain.Drain.accepting`, so a drain closes the listening sockets at once while the
connection tasks keep running until they finish or their owner cancels them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio

from ztunnel.drain import Drain

log = structlog.get_logger("ztunnel.accept")

Handler = Callable[[trio.SocketStream], Awaitable[None]]


def bound_address(listeners: Sequence[trio.SocketListener]) -> tuple[str, int]:
    sockname = listeners[0].socket.getsockname()
    return str(sockname[0]), int(sockname[1])


async def serve_until_drained(
    listeners: Sequence[trio.SocketListener],
    handler: Handler,
    drain: Drain,
    *,
    name: str,
    on_drained: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``listeners`` with ``handler``; reports the bound address; returns when the connections
    still open after a drain have ended (or raises Cancelled when the owner gives up on them)."""
    try:
        async with trio.open_nursery() as connections:
            with drain.accepting():
                task_status.started(bound_address(listeners))
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(_accept_loop, listener, connections, handler, name)
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            if on_drained is not None:
                on_drained()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _accept_loop(listener: trio.SocketListener, connections: trio.Nursery, handler: Handler, name: str) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:  # EMFILE and friends: back off instead of spinning
            log.warning("accept_failed", listener=name, error=str(exc))
            await trio.sleep(0.1)
            continue
        connections.start_soon(handler, stream)
