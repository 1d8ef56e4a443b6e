"""SettledStore under a mock clock: one report per burst, after the quiet period or the maximum delay."""

from __future__ import annotations

import pytest
import trio

from istiod_lite.settled_store import SettledStore
from istiod_lite.stores.base import ResourceKey, Revision, StoredResource


class CountingStore:
    """The smallest Store: a revision that tests bump by hand."""

    def __init__(self) -> None:
        self.counter = Revision()

    @property
    def revision(self) -> int:
        return self.counter.value

    def list(self) -> dict[ResourceKey, StoredResource]:
        return {}

    @property
    def errors(self) -> dict[str, tuple[str, ...]]:
        return {}

    async def wait_changed(self, since: int) -> int:
        return await self.counter.wait_changed(since)


async def _bumps(store: CountingStore, times: list[float]) -> None:
    start = trio.current_time()
    for at in times:
        await trio.sleep_until(start + at)
        store.counter.bump()


@pytest.mark.parametrize(
    ("bumps", "reported_at", "revision"),
    [
        ([0.0], 0.05, 1),  # one change: reported after the quiet period
        ([0.0, 0.03, 0.06], 0.11, 3),  # a burst: once, after it went quiet
        ([i * 0.04 for i in range(30)], 0.5, 13),  # a trickle: no later than max_delay after the first
    ],
    ids=["single", "burst", "trickle"],
)
async def test_one_report_per_burst(
    autojump_clock: trio.testing.MockClock, bumps: list[float], reported_at: float, revision: int
) -> None:
    store = CountingStore()
    settled = SettledStore(store, quiet=0.05, max_delay=0.5)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_bumps, store, bumps)
        got = await settled.wait_changed(0)
        assert trio.current_time() - start == pytest.approx(reported_at)
        assert got == revision
        nursery.cancel_scope.cancel()


def test_an_impossible_window_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="quiet <= max_delay"):
        SettledStore(CountingStore(), quiet=1.0, max_delay=0.5)
