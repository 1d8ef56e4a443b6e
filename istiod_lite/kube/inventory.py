"""Pods as the translation's inventory: what Kubernetes says about a pod, in :class:`PodInfo`'s terms.

The runner builds the same records for local processes; here they come from the API: the node from
``spec.nodeName`` (what node authorization checks), the address from ``status.podIP`` (``None`` until
the pod has one), the owning Deployment from the ReplicaSet owner reference minus its
``pod-template-hash`` suffix (the name Istio reports as ``workload_name``), named container ports for
resolving a Service's named ``targetPort``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from istiod_lite.stores.base import ResourceKey, StoredResource
from istiod_lite.translate import translate_to_push
from istiod_lite.translate.inputs import PodInfo
from meshcore.push.protocol import JSON


def _deployment(metadata: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    template_hash = labels.get("pod-template-hash", "")
    for owner in metadata.get("ownerReferences") or ():
        if owner.get("kind") == "ReplicaSet" and template_hash:
            name = str(owner.get("name") or "")
            suffix = f"-{template_hash}"
            return name[: -len(suffix)] if name.endswith(suffix) else name
    return ""


#: Set by the node agent once a pod's traffic is redirected to ztunnel (istio-cni's annotation).
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    ports = {
        str(port["name"]): int(port["containerPort"])
        for container in spec.get("containers") or ()
        for port in container.get("ports") or ()
        if port.get("name") and port.get("containerPort")
    }
    return PodInfo(
        name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or "default"),
        ip=str(status["podIP"]) if status.get("podIP") else None,
        node=str(spec.get("nodeName") or ""),
        labels=labels,
        service_account=str(spec.get("serviceAccountName") or "default"),
        deployment=_deployment(metadata, labels),
        container_ports=ports,
        redirected=(metadata.get("annotations") or {}).get(REDIRECTION_ANNOTATION) == "enabled",
    )


def translation_inputs(resources: Mapping[ResourceKey, StoredResource]) -> tuple[list[Any], list[PodInfo]]:
    """The Kubernetes store's content split the way translation takes it: typed resources and the pods.

    EndpointSlices stay out: translation derives endpoints from pods and Service selectors, as the local
    runner's inventory does, so both paths produce the same workloads.
    """
    typed: list[Any] = []
    pods: list[PodInfo] = []
    for key in sorted(resources):
        obj = resources[key].obj
        if isinstance(obj, PodInfo):
            pods.append(obj)
        elif key.kind != "EndpointSlice":
            typed.append(obj)
    return typed, pods


def translate_cluster(resources: Mapping[ResourceKey, StoredResource]) -> dict[str, dict[str, JSON]]:
    """The push state for a cluster: the same translation as the local stores, with the real pod inventory."""
    typed, pods = translation_inputs(resources)
    return translate_to_push(typed, pods)
