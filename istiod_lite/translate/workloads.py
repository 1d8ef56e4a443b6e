"""Pods → pushed ``Workload`` s, with Istio's identity, enrolment and naming rules.

* uid ``Kubernetes//Pod/<namespace>/<name>`` (Istio's ``<cluster id>//Pod/<ns>/<name>``);
* ``tunnel_protocol`` HBONE when the pod is in the ambient mesh: its label
  ``istio.io/dataplane-mode: ambient``, or its namespace's with no pod label — a pod labelled ``none``
  is out even in an enrolled namespace. A waypoint's own pods speak HBONE natively, so they are HBONE
  too. Everything else is NONE: ztunnel reaches it with plain TCP;
* canonical name / revision from Istio's label precedence (``service.istio.io/canonical-name``,
  ``app.kubernetes.io/name``, ``app``, then the workload name; ``…/canonical-revision``,
  ``app.kubernetes.io/version``, ``version``, then ``latest``);
* ``services``: every Service of the pod's namespace whose selector matches, with this pod's own
  target ports (computed by :class:`istiod_lite.translate.services.EndpointIndex`).
"""

from __future__ import annotations

from collections.abc import Mapping

from istiod_lite.translate.inputs import CLUSTER_ID, DATAPLANE_MODE, Inventory, PodInfo
from schemas.discovery import GatewayAddress, TunnelProtocol, Workload, WorkloadType

_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")


def pod_uid(namespace: str, name: str) -> str:
    return f"{CLUSTER_ID}//Pod/{namespace}/{name}"


def in_ambient_mesh(pod: PodInfo, namespace_labels: Mapping[str, str]) -> bool:
    mode = pod.labels.get(DATAPLANE_MODE)
    if mode is not None:
        return mode == "ambient"
    return namespace_labels.get(DATAPLANE_MODE) == "ambient"


def canonical_name(pod: PodInfo) -> str:
    for label in _NAME_LABELS:
        if pod.labels.get(label):
            return pod.labels[label]
    return pod.deployment or pod.name


def canonical_revision(pod: PodInfo) -> str:
    for label in _REVISION_LABELS:
        if pod.labels.get(label):
            return pod.labels[label]
    return "latest"


def build_workload(
    inventory: Inventory,
    pod: PodInfo,
    *,
    services: Mapping[str, dict[int, int]],
    trust_domain: str,
    waypoint: GatewayAddress | None,
    is_waypoint: bool,
    policies: tuple[str, ...],
) -> Workload:
    labelled = in_ambient_mesh(pod, inventory.namespace_labels(pod.namespace))
    enrolled = is_waypoint or (labelled and pod.redirected is not False)
    return Workload(
        uid=pod_uid(pod.namespace, pod.name),
        name=pod.name,
        namespace=pod.namespace,
        addresses=(pod.ip,) if pod.ip else (),
        tunnel_protocol=TunnelProtocol.HBONE if enrolled else TunnelProtocol.NONE,
        trust_domain=trust_domain,
        service_account=pod.service_account,
        waypoint=waypoint,
        node=pod.node,
        canonical_name=canonical_name(pod),
        canonical_revision=canonical_revision(pod),
        workload_name=pod.deployment or pod.name,
        workload_type=WorkloadType.DEPLOYMENT if pod.deployment else WorkloadType.POD,
        services=dict(services),
        authorization_policies=policies,
    )
