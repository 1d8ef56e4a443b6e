"""Bidirectional copy between two byte streams: the inner loop of every L4 proxy.

Each direction runs until its source ends, then half-closes its destination (TCP FIN ↔ HTTP/2
END_STREAM), so a request/response protocol that signals "done" with a half-close keeps working
through the tunnel. If either side is *reset* (TCP RST, RST_STREAM, the HTTP/2 connection lost) the
other side is reset too — a peer must see an abort as an abort, never as a clean end of data.

Byte counters are updated as data moves so telemetry can read them while the copy runs.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import attrs
import trio

from meshcore.hbone.errors import HboneError
from meshcore.hbone.h2stream import HboneStream

CHUNK = 256 * 1024

# What "the other side aborted" looks like, from either kind of stream.
_ABORTS = (trio.BrokenResourceError, HboneError)


@attrs.define
class CopyStats:
    """Bytes moved so far; ``reset`` says the copy ended by aborting both sides."""

    downstream_to_upstream: int = 0
    upstream_to_downstream: int = 0
    reset: bool = False
    error: str | None = None


async def reset_stream(stream: trio.abc.Stream) -> None:
    """Abort ``stream``: RST_STREAM for a tunnel, a TCP RST (SO_LINGER 0) for a socket."""
    if isinstance(stream, HboneStream):
        await stream.reset()
        return
    if isinstance(stream, trio.SocketStream):
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


async def copy_bidirectional(
    downstream: trio.abc.Stream, upstream: trio.abc.Stream, stats: CopyStats | None = None
) -> CopyStats:
    """Copy both ways until both directions ended (half-closes honoured) or one side aborted.

    Streams are not closed on a clean end — the caller owns them; on an abort both are reset.
    """
    stats = stats if stats is not None else CopyStats()

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, forward: bool) -> None:
        while True:
            data = await source.receive_some(CHUNK)
            if not data:
                break
            await sink.send_all(data)
            if forward:
                stats.downstream_to_upstream += len(data)
            else:
                stats.upstream_to_downstream += len(data)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()

    async def guarded(source: trio.abc.Stream, sink: trio.abc.Stream, forward: bool) -> None:
        try:
            await pump(source, sink, forward)
        except (*_ABORTS, trio.ClosedResourceError) as exc:
            if not stats.reset:
                stats.reset = True
                stats.error = f"{type(exc).__name__}: {exc}"
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guarded, downstream, upstream, True)
        nursery.start_soon(guarded, upstream, downstream, False)
    if stats.reset:
        with trio.CancelScope(shield=True):
            await reset_stream(downstream)
            await reset_stream(upstream)
    return stats
