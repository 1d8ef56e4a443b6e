"""The node agent's Kubernetes side: which pods on this node to capture, and the annotation that says so.

The decision is istiod's (:func:`istiod_lite.translate.workloads.in_ambient_mesh`: the pod's
``istio.io/dataplane-mode`` label, else its namespace's), so the node agent captures exactly the pods istiod
tells ztunnels are HBONE workloads, plus what only a node can check: the pod is scheduled *here*, has an
address, is not in the host network namespace, has no Istio sidecar, and is not finished.

Once a pod's traffic is redirected, the agent annotates it ``ambient.istio.io/redirection: enabled`` (what
Istio's CNI agent does, and what tells operators and istiod the capture is in place); un-enrolling removes
the annotation. :func:`plan` turns "what should be captured" and "what is" into the adds and removals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from istiod_lite.kube.inventory import REDIRECTION_ANNOTATION, pod_info
from istiod_lite.translate.workloads import in_ambient_mesh

SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"


@attrs.frozen
class EnrolledPod:
    """What the capture side needs to redirect one pod (mirrors the node agent's CapturedPod)."""

    uid: str
    name: str
    namespace: str
    ip: str
    service_account: str


def should_capture(pod: Mapping[str, Any], namespace_labels: Mapping[str, str], node: str) -> bool:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("nodeName") != node or not status.get("podIP") or spec.get("hostNetwork"):
        return False
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    if SIDECAR_STATUS_ANNOTATION in (metadata.get("annotations") or {}):
        return False  # a sidecar pod is Istio's sidecar mode, never captured by ztunnel
    return in_ambient_mesh(pod_info(pod), namespace_labels)


def desired(
    pods: Iterable[Mapping[str, Any]], namespaces: Mapping[str, Mapping[str, Any]], node: str
) -> dict[str, EnrolledPod]:
    """uid → pod, for every pod this node's agent should capture now."""
    wanted: dict[str, EnrolledPod] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        labels = ((namespaces.get(namespace) or {}).get("metadata") or {}).get("labels") or {}
        if should_capture(pod, labels, node) and metadata.get("uid"):
            info = pod_info(pod)
            assert info.ip is not None  # should_capture checked podIP
            wanted[str(metadata["uid"])] = EnrolledPod(
                uid=str(metadata["uid"]), name=info.name, namespace=info.namespace, ip=info.ip,
                service_account=info.service_account,
            )
    return wanted


def plan(
    wanted: Mapping[str, EnrolledPod], captured: Mapping[str, EnrolledPod]
) -> tuple[list[EnrolledPod], list[EnrolledPod]]:
    """(to add, to remove); a pod whose address or account changed is removed and added again."""
    adds = [pod for uid, pod in sorted(wanted.items()) if captured.get(uid) != pod]
    removes = [pod for uid, pod in sorted(captured.items()) if wanted.get(uid) != pod]
    return adds, removes


def redirection_patch(enabled: bool) -> dict[str, Any]:
    """The merge patch that sets (or removes) the redirection annotation."""
    return {"metadata": {"annotations": {REDIRECTION_ANNOTATION: "enabled" if enabled else None}}}
