"""Store → snapshot → push: rebuild the pushed state whenever the store's revision moves.

The store coalesces its changes into revisions and the push server debounces publishes, so this loop
only has to rebuild from the whole store and publish. A build that fails (a translation bug, or a
combination of resources translation refuses) is logged and the previous published state stays in
force — the same rule as for an invalid file: proxies keep their last good config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio

from istiod_lite.push.server import PushServer
from istiod_lite.stores.base import ResourceKey, Store, StoredResource
from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import get_logger

_log = get_logger("istiod_lite.push.feed")

Build = Callable[[Mapping[ResourceKey, StoredResource]], Mapping[str, Mapping[str, JSON]]]
"""Translate every stored resource into the pushed state: type → resource key → JSON body."""


async def feed(
    store: Store,
    build: Build,
    server: PushServer,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish ``build(store.list())`` now (readiness) and after every store change, until cancelled."""
    revision = store.revision
    _publish(store, build, server, revision)
    task_status.started()
    while True:
        revision = await store.wait_changed(revision)
        _publish(store, build, server, revision)


def _publish(store: Store, build: Build, server: PushServer, revision: int) -> None:
    try:
        snapshot = build(store.list())
    except Exception as exc:  # a bad build must not stop later (fixed) revisions from going out
        _log.error(
            "config translation failed; proxies keep the last pushed state",
            revision=revision,
            error=repr(exc),
        )
        return
    server.publish(snapshot)
