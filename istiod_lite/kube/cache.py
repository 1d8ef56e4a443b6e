"""One resource type's objects as the last list + watch events left them (sans-IO: events in, "changed?" out).

This is the reflector's bookkeeping without the network: :meth:`ObjectCache.replace` is a (re-)list, which
is how state lost while a watch was broken (410 Gone, a restart) is recovered — objects the new list does not
contain are gone, however their deletion was missed — and :meth:`ObjectCache.apply` is one watch event.
Both answer whether anything a consumer can see changed, so a bookmark or a replayed ADDED of an object we
already hold does not wake the translation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from istiod_lite.kube.api import WatchEvent

ObjectKey = tuple[str, str]  # (namespace or "", name)


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class ObjectCache:
    def __init__(self) -> None:
        self.objects: dict[ObjectKey, Mapping[str, Any]] = {}
        self.resource_version = ""
        self.synced = False

    def replace(self, items: Iterable[Mapping[str, Any]], resource_version: str) -> bool:
        """A full list: it *is* the state at ``resource_version``; returns whether anything changed."""
        fresh = {object_key(item): item for item in items}
        changed = fresh != self.objects or not self.synced
        self.objects = fresh
        self.resource_version = resource_version
        self.synced = True
        return changed

    def apply(self, event: WatchEvent) -> bool:
        """One watch event; unknown types are ignored (the API may add some)."""
        version = _resource_version(event.object)
        if version:
            self.resource_version = version
        if event.type == "BOOKMARK":
            return False
        key = object_key(event.object)
        if event.type in ("ADDED", "MODIFIED"):
            if self.objects.get(key) == event.object:
                return False
            self.objects[key] = event.object
            return True
        if event.type == "DELETED":
            return self.objects.pop(key, None) is not None
        return False
