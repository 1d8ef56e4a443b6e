"""Several stores seen as one: what translation reads.

Later stores win: in ``MergedStore([directory, applied])`` a resource applied with ``meshctl apply``
replaces the file's version of the same resource, as the user's latest explicit action should. Each
such shadowing is listed in ``overrides`` so ``meshctl get`` can explain where a resource came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import trio

from istiod_lite.stores.base import ResourceKey, Store, StoredResource


class MergedStore:
    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("MergedStore needs at least one store")
        self.stores = tuple(stores)

    @property
    def revision(self) -> int:
        return sum(store.revision for store in self.stores)  # each only grows, so the sum does

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        merged: dict[ResourceKey, StoredResource] = {}
        for store in self.stores:
            merged.update(store.list())
        return merged

    @property
    def overrides(self) -> tuple[str, ...]:
        seen: dict[ResourceKey, StoredResource] = {}
        warnings = []
        for store in self.stores:
            for key, resource in store.list().items():
                if key in seen:
                    warnings.append(f"{key} from {resource.source} overrides the one at {seen[key].source}")
                seen[key] = resource
        return tuple(warnings)

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        errors: dict[str, tuple[str, ...]] = {}
        for store in self.stores:
            for source, problems in store.errors.items():
                errors[source] = errors.get(source, ()) + tuple(problems)
        return errors

    async def wait_changed(self, since: int) -> int:
        while self.revision == since:
            async with trio.open_nursery() as nursery:
                for store in self.stores:
                    nursery.start_soon(_first_change, store, store.revision, nursery.cancel_scope)
        return self.revision


async def _first_change(store: Store, since: int, done: trio.CancelScope) -> None:
    await store.wait_changed(since)
    done.cancel()
