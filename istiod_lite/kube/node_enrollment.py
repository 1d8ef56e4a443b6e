"""The node agent's Kubernetes loop: keep the captured set equal to :func:`enrollment.desired` and the pods'
redirection annotations equal to the captured set.

It watches only its node's pods (field selector ``spec.nodeName``) and the Namespaces (their labels decide
enrollment too), and drives a :class:`CaptureTarget` — the node agent proper, which installs the in-pod
rules and hands the pod's network namespace to ztunnel. Removal goes first (a pod that changed address is
released before it is captured again). A capture that fails is logged and retried on the next change; the
annotation is reconciled from what is actually captured, so it never claims a redirection that failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import trio

from istiod_lite.kube.api import RESOURCES, KubeApi, KubeApiError
from istiod_lite.kube.enrollment import EnrolledPod, desired, plan, redirection_patch
from istiod_lite.kube.inventory import REDIRECTION_ANNOTATION
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.stores.base import Revision
from meshcore.errors import MeshError
from meshcore.telemetry.logs import get_logger

_log = get_logger("istiod_lite.kube.node_enrollment")

KINDS = ("Namespace", "Pod")


class CaptureTarget(Protocol):
    """The node agent: redirect a pod's traffic to ztunnel, or stop doing so (raises MeshError on failure)."""

    async def add(self, pod: EnrolledPod) -> None: ...

    async def remove(self, pod: EnrolledPod) -> None: ...


def node_store(api: KubeApi, node: str) -> KubernetesStore:
    """The node agent's view: Namespaces, and the Pods scheduled on ``node`` only."""
    return KubernetesStore(api, KINDS, fields={"Pod": f"spec.nodeName={node}"})


class NodeEnrollment:
    def __init__(self, api: KubeApi, store: KubernetesStore, node: str, capture: CaptureTarget) -> None:
        self._api = api
        self._store = store
        self._node = node
        self._capture = capture
        self.captured: dict[str, EnrolledPod] = {}
        self._passes = Revision()

    @property
    def passes(self) -> int:
        return self._passes.value

    async def wait_pass(self, since: int) -> int:
        return await self._passes.wait_changed(since)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            revision = self._store.revision
            await self.reconcile()
            await self._store.wait_changed(revision)

    async def reconcile(self) -> None:
        pods = self._store.objects("Pod")
        namespaces = {name: obj for (_, name), obj in self._store.objects("Namespace").items()}
        adds, removes = plan(desired(pods.values(), namespaces, self._node), self.captured)
        for pod in removes:
            try:
                await self._capture.remove(pod)
            except MeshError as exc:
                _log.warning("releasing pod failed; retrying on the next change", pod=pod.name, error=str(exc))
                continue
            del self.captured[pod.uid]
            _log.info("pod released from ambient capture", pod=f"{pod.namespace}/{pod.name}")
        for pod in adds:
            try:
                await self._capture.add(pod)
            except MeshError as exc:
                _log.warning("capturing pod failed; retrying on the next change", pod=pod.name, error=str(exc))
                continue
            self.captured[pod.uid] = pod
            _log.info("pod captured for ambient", pod=f"{pod.namespace}/{pod.name}", ip=pod.ip)
        await self._annotate(pods)
        self._passes.bump()

    async def _annotate(self, pods: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        for (namespace, name), pod in sorted(pods.items()):
            metadata = pod.get("metadata") or {}
            if (pod.get("spec") or {}).get("nodeName") != self._node:
                continue
            want = str(metadata.get("uid")) in self.captured
            have = (metadata.get("annotations") or {}).get(REDIRECTION_ANNOTATION) == "enabled"
            if want == have:
                continue
            try:
                await self._api.patch(RESOURCES["Pod"], name, namespace, redirection_patch(want))
            except KubeApiError as exc:
                _log.warning("annotating pod failed; retrying on the next change", pod=name, error=str(exc))
