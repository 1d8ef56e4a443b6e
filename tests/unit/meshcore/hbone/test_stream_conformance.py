"""HboneStream against trio's generic HalfCloseableStream checker.

One deliberate difference from trio's contract: ``aclose()`` on a tunnel that has not finished both
ways is an *abort* (RST_STREAM CANCEL), because for a proxy an unannounced close must reach the
application as a reset, never as a clean end of data (``send_eof`` is the graceful path). The checker
expects a graceful close, so for this test ``aclose`` is wrapped to ``send_eof`` first; every other
rule (checkpoints, BusyResourceError, Closed vs Broken errors, cancellation) is checked unchanged.
"""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from meshcore.hbone.connection import HboneConnection
from meshcore.hbone.h2stream import HboneStream

_abortive_aclose = HboneStream.aclose


async def _graceful_aclose(self: HboneStream) -> None:
    if not self.finished and self._host.failure() is None:
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self.send_eof()
    await _abortive_aclose(self)


async def test_hbone_stream_is_a_well_behaved_half_closeable_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HboneStream, "aclose", _graceful_aclose)
    async with trio.open_nursery() as nursery:

        async def stream_pair() -> tuple[HboneStream, HboneStream]:
            accepted_send, accepted = trio.open_memory_channel[HboneStream](1)
            client_end, server_end = trio.testing.memory_stream_pair()

            def on_request(stream: HboneStream, headers: list[tuple[bytes, bytes]]) -> None:
                stream.send_response([(":status", "200")], final=False)
                accepted_send.send_nowait(stream)

            client = HboneConnection(client_end, client_side=True, peer="server")
            server = HboneConnection(server_end, client_side=False, peer="client", on_request=on_request)
            await nursery.start(client.run)
            await nursery.start(server.run)
            near = await client.open_stream([(":method", "CONNECT"), (":authority", "10.0.0.5:80")])
            return near, await accepted.receive()

        with trio.fail_after(30):
            await trio.testing.check_half_closeable_stream(stream_pair, None)
        nursery.cancel_scope.cancel()
