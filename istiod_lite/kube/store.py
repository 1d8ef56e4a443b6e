"""The Kubernetes store: list + watch each resource type and offer the result through the :class:`Store` seam.

One reflector task per type: list (the state and its resourceVersion), then watch from that version with
bookmarks, applying events to an :class:`~istiod_lite.kube.cache.ObjectCache`. A 410 Gone means the
version was compacted away, so the reflector lists again — the list replaces the cache, which is how
changes made while the watch was broken are neither lost nor applied twice. Other failures back off
(``trio.sleep``, 0.5 s doubling to 30 s) and resume the watch from the last version seen.

Objects become :class:`StoredResource` as the file stores make them: user kinds through the schemas
validation (an invalid object is left out and reported under ``errors``, the rest stay in force), Pods as
the translation's :class:`~istiod_lite.translate.inputs.PodInfo` inventory (node from ``spec.nodeName``),
EndpointSlices as their manifests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any

import trio
import yaml

from istiod_lite.kube.api import RESOURCES, ApiResource, KubeApi, KubeApiError, WatchExpired
from istiod_lite.kube.cache import ObjectCache
from istiod_lite.kube.inventory import pod_info
from istiod_lite.stores.base import ResourceKey, Revision, StoredResource
from istiod_lite.stores.schemas_parser import parse_with_schemas
from meshcore.telemetry.logs import get_logger
from schemas.kinds import KINDS

_log = get_logger("istiod_lite.kube.store")

WATCHED_KINDS: tuple[str, ...] = (
    "Namespace",
    "Pod",
    "Service",
    "EndpointSlice",
    "ServiceAccount",
    *sorted(info.kind for info in KINDS.values() if info.is_custom),  # the CRDs
)
"""What istiod_lite reads from the cluster (and may only list/watch: see rbac_usage)."""

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class KubernetesStore:
    """A :class:`~istiod_lite.stores.base.Store` fed by the API server; ``await nursery.start(store.run)``."""

    def __init__(
        self, api: KubeApi, kinds: Sequence[str] = WATCHED_KINDS, *, fields: Mapping[str, str] | None = None
    ) -> None:
        """``fields``: kind → field selector (e.g. ``{"Pod": "spec.nodeName=node-a"}`` for a node agent)."""
        self._api = api
        self._fields = dict(fields or {})
        self._resources = [RESOURCES[kind] for kind in kinds]
        self._caches = {resource.kind: ObjectCache() for resource in self._resources}
        self._converted: dict[str, dict[ResourceKey, StoredResource]] = {kind: {} for kind in kinds}
        # Per kind: object key → (the manifest converted, its result); an object the cache still holds
        # unchanged (the same dict) is not validated again when another object of its kind changes.
        self._memo: dict[str, dict[tuple[str, str], _Converted]] = {kind: {} for kind in kinds}
        self._errors: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in kinds}
        self._revision = Revision()
        self.relists = dict.fromkeys(kinds, 0)  # lists after the first: 410s and recoveries (for tests/metrics)

    # ------------------------------------------------------------------------------------- Store

    @property
    def revision(self) -> int:
        return self._revision.value

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        merged: dict[ResourceKey, StoredResource] = {}
        for converted in self._converted.values():
            merged.update(converted)
        return merged

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return {source: problems for per_kind in self._errors.values() for source, problems in per_kind.items()}

    async def wait_changed(self, since: int) -> int:
        return await self._revision.wait_changed(since)

    def resource_version(self, kind: str) -> str:
        """The version the next watch of ``kind`` resumes from (advanced by events and bookmarks)."""
        return self._caches[kind].resource_version

    def objects(self, kind: str) -> Mapping[tuple[str, str], Mapping[str, Any]]:
        """The raw cached objects of one kind by (namespace, name): what the waypoint controller reads."""
        return dict(self._caches[kind].objects)

    # ------------------------------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every reflector; ready once each type has been listed once."""
        async with trio.open_nursery() as nursery:
            for resource in self._resources:
                await nursery.start(self._reflect, resource)
            task_status.started()

    async def _reflect(self, resource: ApiResource, *, task_status: trio.TaskStatus[None]) -> None:
        cache = self._caches[resource.kind]
        backoff = BACKOFF_MIN
        started = False
        must_list = True
        while True:
            try:
                if must_list:
                    items, version = await self._api.list(resource, self._fields.get(resource.kind, ""))
                    if started:
                        self.relists[resource.kind] += 1
                    if cache.replace(items, version):
                        self._publish(resource.kind)
                    must_list = False
                    if not started:
                        started = True
                        task_status.started()
                watch = self._api.watch(resource, cache.resource_version, self._fields.get(resource.kind, ""))
                async with aclosing(watch) as events:
                    async for event in events:
                        backoff = BACKOFF_MIN
                        if cache.apply(event):
                            self._publish(resource.kind)
            except WatchExpired as exc:
                _log.info("watch expired; listing again", kind=resource.kind, reason=str(exc))
                must_list = True
                continue
            except KubeApiError as exc:
                _log.warning(
                    "Kubernetes API call failed; retrying", kind=resource.kind, error=str(exc), retry_in=backoff
                )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _publish(self, kind: str) -> None:
        converted: dict[ResourceKey, StoredResource] = {}
        errors: dict[str, tuple[str, ...]] = {}
        memo: dict[tuple[str, str], _Converted] = {}
        for (namespace, name), manifest in sorted(self._caches[kind].objects.items()):
            source = f"kubernetes:{kind}/{namespace}/{name}" if namespace else f"kubernetes:{kind}/{name}"
            previous = self._memo[kind].get((namespace, name))
            if previous is not None and previous[0] is manifest:
                stored, problems = previous[1], previous[2]
            else:
                stored, problems = _convert(kind, manifest, source)
            memo[namespace, name] = (manifest, stored, problems)
            if stored is not None:
                converted[stored.key] = stored
            if problems:
                errors[source] = problems
        self._converted[kind] = converted
        self._errors[kind] = errors
        self._memo[kind] = memo
        self._revision.bump()


_Converted = tuple[Mapping[str, Any], StoredResource | None, tuple[str, ...]]


def _convert(kind: str, manifest: Mapping[str, Any], source: str) -> tuple[StoredResource | None, tuple[str, ...]]:
    metadata = manifest.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    if kind == "Pod":
        key = ResourceKey("Pod", namespace, name)
        return StoredResource(key=key, manifest=manifest, source=source, obj=pod_info(manifest)), ()
    if kind == "EndpointSlice":
        key = ResourceKey(kind, namespace, name)
        return StoredResource(key=key, manifest=manifest, source=source, obj=manifest), ()
    result = parse_with_schemas(yaml.safe_dump(dict(manifest), sort_keys=False), source)
    if not result.ok or not result.resources:
        return None, result.errors or (f"{source}: not understood by the schemas package",)
    resource = result.resources[0]
    return StoredResource(key=resource.key, manifest=resource.manifest, source=source, obj=resource.obj), ()
