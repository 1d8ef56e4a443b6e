"""A store view whose changes are reported once they settle, so translation runs once per burst.

``meshctl up`` writing a dozen files, the runner rewriting ``pods.json`` as each pod starts, or a
multi-document apply each move a store's revision; translating a large mesh costs ~0.1 s, and doing it
for every step of a burst only to throw all but the last result away wastes the control plane's only
thread. Istio debounces before building a push context for the same reason. The push server debounces
what goes *out* as well; this debounces the work that comes *before* it. The rule is
:class:`~istiod_lite.push.debounce.Debouncer`'s: report after ``quiet`` seconds without a change, but
never later than ``max_delay`` after the first one.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from istiod_lite.push.debounce import Debouncer
from istiod_lite.stores.base import ResourceKey, Store, StoredResource


class SettledStore:
    """:class:`~istiod_lite.stores.base.Store` over ``store``; only ``wait_changed`` behaves differently."""

    def __init__(self, store: Store, *, quiet: float = 0.05, max_delay: float = 0.5) -> None:
        Debouncer(quiet=quiet, max_delay=max_delay)  # validates the pair now, not at the first change
        self._store = store
        self._quiet = quiet
        self._max_delay = max_delay

    @property
    def revision(self) -> int:
        return self._store.revision

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        return self._store.list()

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return self._store.errors

    async def wait_changed(self, since: int) -> int:
        """The revision once it differs from ``since`` and has then been quiet (or the burst ran long)."""
        revision = await self._store.wait_changed(since)
        debouncer = Debouncer(quiet=self._quiet, max_delay=self._max_delay)
        debouncer.changed(trio.current_time())
        while True:  # bounded: the deadline never moves past first change + max_delay
            deadline = debouncer.deadline()
            assert deadline is not None
            with trio.move_on_at(deadline):
                revision = await self._store.wait_changed(revision)
                debouncer.changed(trio.current_time())
                continue
            return self._store.revision
