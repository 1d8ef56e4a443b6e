"""ObjectCache: what a list or a watch event does to one resource type's state, and whether it is a change."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.kube.api import WatchEvent
from istiod_lite.kube.cache import ObjectCache


def obj(name: str, version: str, namespace: str = "ns", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version}, "spec": spec}


def listed(*objects: dict[str, Any], version: str = "10") -> ObjectCache:
    cache = ObjectCache()
    cache.replace(objects, version)
    return cache


@pytest.mark.parametrize(
    ("event", "changed", "names", "version"),
    [
        (WatchEvent("ADDED", obj("c", "11")), True, ["a", "b", "c"], "11"),
        (WatchEvent("ADDED", obj("a", "1")), False, ["a", "b"], "1"),  # a replay of what we hold
        (WatchEvent("MODIFIED", obj("a", "12", replicas=2)), True, ["a", "b"], "12"),
        (WatchEvent("DELETED", obj("b", "13")), True, ["a"], "13"),
        (WatchEvent("DELETED", obj("zz", "13")), False, ["a", "b"], "13"),  # never seen: nothing to drop
        (WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "40"}}), False, ["a", "b"], "40"),
        (WatchEvent("SOMETHING-NEW", obj("d", "14")), False, ["a", "b"], "14"),
    ],
)
def test_watch_events(event: WatchEvent, changed: bool, names: list[str], version: str) -> None:
    cache = listed(obj("a", "1"), obj("b", "2"))
    assert cache.apply(event) is changed
    assert sorted(name for _, name in cache.objects) == names
    assert cache.resource_version == version


def test_a_relist_replaces_state_so_deletions_missed_during_a_broken_watch_are_applied() -> None:
    cache = listed(obj("a", "1"), obj("b", "2"))
    assert cache.replace([obj("a", "1"), obj("c", "30")], "31") is True
    assert sorted(name for _, name in cache.objects) == ["a", "c"]
    assert cache.resource_version == "31"


def test_an_identical_relist_is_no_change_but_the_first_empty_list_is() -> None:
    cache = listed(obj("a", "1"))
    assert cache.replace([obj("a", "1")], "50") is False
    assert cache.resource_version == "50"
    empty = ObjectCache()
    assert empty.synced is False
    assert empty.replace([], "5") is True  # consumers learn that the type is now known (and empty)
    assert empty.synced is True


def test_cluster_scoped_objects_are_keyed_without_namespace() -> None:
    cache = ObjectCache()
    cache.replace([{"metadata": {"name": "prod", "resourceVersion": "3"}}], "3")
    assert list(cache.objects) == [("", "prod")]
