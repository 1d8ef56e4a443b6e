"""The Kubernetes store seen the way istiod_lite's server takes its inputs: config and pods apart.

The server merges *config stores* (typed user resources, translated as written) and takes pods from a
*pod source* (``pods``: the runner's inventory locally, ``None`` meaning "no runner"). One
:class:`~istiod_lite.kube.store.KubernetesStore` feeds both: :class:`ClusterConfig` lists everything but
the pod inventory (Pods, and EndpointSlices which translation does not read), :class:`ClusterPods` offers
the Pods as :class:`~istiod_lite.pod_inventory.Pod` records. Both share the store's revision, so one pod
change re-translates once.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from istiod_lite.kube.store import KubernetesStore
from istiod_lite.pod_inventory import Pod
from istiod_lite.stores.base import ResourceKey, StoredResource
from istiod_lite.translate.inputs import PodInfo

INVENTORY_KINDS = frozenset({"Pod", "EndpointSlice"})


class ClusterConfig:
    """A :class:`~istiod_lite.stores.base.Store`: the cluster's user resources (no pods)."""

    def __init__(self, store: KubernetesStore) -> None:
        self.store = store

    @property
    def revision(self) -> int:
        return self.store.revision

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        return {key: value for key, value in self.store.list().items() if key.kind not in INVENTORY_KINDS}

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return self.store.errors

    async def wait_changed(self, since: int) -> int:
        return await self.store.wait_changed(since)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.store.run(task_status=task_status)


class ClusterPods:
    """The pod source: the cluster's Pods, in the runner inventory's record type; never ``None``."""

    def __init__(self, store: KubernetesStore) -> None:
        self.store = store

    @property
    def pods(self) -> list[Pod]:
        return [
            Pod(name=info.name, namespace=info.namespace, ip=info.ip, node=info.node, labels=dict(info.labels),
                service_account=info.service_account, deployment=info.deployment,
                container_ports=dict(info.container_ports))
            for key, resource in sorted(self.store.list().items())
            if key.kind == "Pod" and isinstance(info := resource.obj, PodInfo)
        ]
