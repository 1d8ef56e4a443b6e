"""The mesh-changing operations ``meshctl`` performs against a cluster instead of a local istiod_lite.

On Kubernetes the API server *is* the store, so these write objects there and istiod_lite's watch does
the rest — the same effect as the local verbs, with istioctl's vocabulary:

* :func:`enroll_namespace` — ``istio.io/dataplane-mode=ambient`` on the Namespace (``none``/removal to leave);
* :func:`apply_waypoint` — what ``istioctl waypoint apply`` creates: a ``Gateway`` of class
  ``istio-waypoint`` with one ``mesh`` listener (15008, HBONE) and ``istio.io/waypoint-for``; with
  ``enroll_namespace`` the Namespace gets ``istio.io/use-waypoint``;
* :func:`apply_manifests` — create each document, or merge-patch it if it exists (``kubectl apply``
  without the last-applied bookkeeping).

Calls go through :class:`~istiod_lite.kube.api.KubeApi` limited to :data:`MESHCTL` (the RBAC a meshctl
user needs, listed in deploy/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from istiod_lite.kube.api import RESOURCES, KubeApi, KubeApiError, Permissions
from meshcore.errors import MeshError
from schemas.kinds import KINDS

DATAPLANE_MODE = "istio.io/dataplane-mode"
USE_WAYPOINT = "istio.io/use-waypoint"
WAYPOINT_FOR = "istio.io/waypoint-for"
WAYPOINT_FOR_VALUES = ("service", "workload", "all", "none")

APPLIABLE_KINDS = tuple(sorted({info.kind for info in KINDS.values()}))
MESHCTL: Permissions = {
    (RESOURCES[kind].group, RESOURCES[kind].plural): frozenset({"get", "create", "patch"}) for kind in APPLIABLE_KINDS
}
"""What meshctl's cluster operations call: read, create and merge-patch the kinds users write."""


class ClusterOperationError(MeshError):
    hint = "{reason}"


async def enroll_namespace(api: KubeApi, namespace: str, mode: str | None = "ambient") -> dict[str, Any]:
    """Set (or with ``None`` remove) the namespace's data-plane mode label."""
    if mode not in ("ambient", "none", None):
        raise ClusterOperationError(f"data-plane mode {mode!r} is not supported", reason="use ambient or none")
    resource = RESOURCES["Namespace"]
    if await api.get(resource, namespace) is None:
        raise ClusterOperationError(
            f"namespace {namespace} does not exist", reason="create it first (kubectl create namespace)"
        )
    return await api.patch(resource, namespace, None, {"metadata": {"labels": {DATAPLANE_MODE: mode}}})


def waypoint_gateway(namespace: str, name: str = "waypoint", traffic_for: str = "service") -> dict[str, Any]:
    if traffic_for not in WAYPOINT_FOR_VALUES:
        raise ClusterOperationError(
            f"--for {traffic_for!r} is not a waypoint traffic type",
            reason=f"use one of {', '.join(WAYPOINT_FOR_VALUES)}",
        )
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "labels": {WAYPOINT_FOR: traffic_for}},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


async def apply_waypoint(
    api: KubeApi, namespace: str, name: str = "waypoint", *, traffic_for: str = "service", enroll: bool = False
) -> list[str]:
    """Create or update the waypoint Gateway; optionally point the namespace at it. Returns what changed."""
    done = await apply_manifests(api, [waypoint_gateway(namespace, name, traffic_for)])
    if enroll:
        await api.patch(RESOURCES["Namespace"], namespace, None, {"metadata": {"labels": {USE_WAYPOINT: name}}})
        done.append(f"Namespace/{namespace} labeled {USE_WAYPOINT}={name}")
    return done


async def apply_manifests(api: KubeApi, documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Create each object, or merge-patch it when it exists; returns one line per object (``kind/ns/name verb``)."""
    done = []
    for document in documents:
        kind = str(document.get("kind") or "")
        if kind not in APPLIABLE_KINDS:
            raise ClusterOperationError(
                f"cannot apply kind {kind or '(none)'!r} to the cluster",
                reason=f"meshctl applies {', '.join(APPLIABLE_KINDS)}; use kubectl for anything else",
            )
        resource = RESOURCES[kind]
        metadata = document.get("metadata") or {}
        name = str(metadata.get("name") or "")
        namespace = str(metadata.get("namespace") or "default") if resource.namespaced else None
        body = {**document, "metadata": {**metadata, **({"namespace": namespace} if namespace else {})}}
        where = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
        try:
            await api.create(resource, body)
            done.append(f"{where} created")
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            patch = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "status")}
            await api.patch(resource, name, namespace, patch)
            done.append(f"{where} configured")
    return done
