"""feed(): every store revision is rebuilt and published; a failing build keeps the last published state."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio
import trio.testing

from istiod_lite.push.feed import feed
from istiod_lite.push.server import PushServer
from istiod_lite.stores.applied import AppliedStore
from istiod_lite.stores.base import ResourceKey, StoredResource
from istiod_lite.stores.manifests import parse_manifests


def _build(resources: Mapping[ResourceKey, StoredResource]) -> dict[str, dict[str, Any]]:
    """Push each ConfigMap's data under its name; a ConfigMap carrying ``fail`` breaks the build."""
    bodies = {key.name: dict(resource.manifest.get("data", {})) for key, resource in resources.items()}
    if any("fail" in body for body in bodies.values()):
        raise ValueError("cannot translate")
    return {"config": bodies}


def _config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_store_changes_are_published_and_a_failing_build_keeps_the_last_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = AppliedStore(tmp_path / "applied.json", parser=parse_manifests)  # ConfigMap: not a mesh kind
    store.apply([_config_map("a", x="1")])
    server = PushServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(feed, store, _build, server)
        published = await server.wait_published("config")
        assert published.resources == {"a": {"x": "1"}}

        store.apply([_config_map("b", y="2")])
        await trio.sleep(1)
        assert server.catalog()["config"].resources == {"a": {"x": "1"}, "b": {"y": "2"}}

        store.apply([_config_map("c", fail="yes")])
        await trio.sleep(1)
        assert server.catalog()["config"].resources == {"a": {"x": "1"}, "b": {"y": "2"}}

        store.delete([ResourceKey("ConfigMap", "default", "c"), ResourceKey("ConfigMap", "default", "a")])
        await trio.sleep(1)
        assert server.catalog()["config"].resources == {"b": {"y": "2"}}
        assert server.stats.catalog_updates == 3
        nursery.cancel_scope.cancel()
