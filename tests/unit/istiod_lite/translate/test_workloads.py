"""Pods → Workloads: Istio's uid format, ambient enrolment, canonical names, service endpoints."""

from __future__ import annotations

import attrs
import pytest

from istiod_lite.translate import translate
from schemas.discovery import TunnelProtocol, WorkloadType
from tests.unit.istiod_lite.translate.helpers import load, pod

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata: {name: enrolled, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
"""


def test_workload_uid_is_istio_cluster_pod_namespace_name() -> None:
    snapshot = translate([], [pod("web-0", "shop", deployment="web")])
    (uid,) = snapshot.workloads
    assert uid == "Kubernetes//Pod/shop/web-0"
    workload = snapshot.workloads[uid]
    assert (workload.name, workload.namespace, workload.workload_name) == ("web-0", "shop", "web")
    assert workload.workload_type is WorkloadType.DEPLOYMENT


@pytest.mark.parametrize(
    ("namespace", "pod_label", "expected"),
    [
        ("enrolled", None, TunnelProtocol.HBONE),  # namespace label enrols every pod
        ("enrolled", "none", TunnelProtocol.NONE),  # pod label none opts out
        ("plain", "ambient", TunnelProtocol.HBONE),  # pod label enrols one pod
        ("plain", None, TunnelProtocol.NONE),  # not in the mesh: ztunnel uses plain TCP
        ("missing-namespace", None, TunnelProtocol.NONE),
    ],
)
def test_tunnel_protocol_follows_istio_dataplane_mode(
    namespace: str, pod_label: str | None, expected: TunnelProtocol
) -> None:
    labels = {"istio.io/dataplane-mode": pod_label} if pod_label else {}
    snapshot = translate(load(NAMESPACES), [pod("p", namespace, labels=labels)])
    assert snapshot.workloads[f"Kubernetes//Pod/{namespace}/p"].tunnel_protocol is expected


@pytest.mark.parametrize(
    ("redirected", "expected"),
    [(None, TunnelProtocol.HBONE), (True, TunnelProtocol.HBONE), (False, TunnelProtocol.NONE)],
)
def test_an_enrolled_pod_is_hbone_only_once_its_traffic_is_redirected(
    redirected: bool | None, expected: TunnelProtocol
) -> None:
    """Kubernetes: until the node agent annotates the pod as redirected, peers must use plain TCP to reach
    it (nothing would answer HBONE there yet); locally no agent reports (None) and the label decides."""
    enrolled = attrs.evolve(pod("p", "enrolled"), redirected=redirected)
    snapshot = translate(load(NAMESPACES), [enrolled])
    assert snapshot.workloads["Kubernetes//Pod/enrolled/p"].tunnel_protocol is expected


def test_waypoint_pods_speak_hbone_natively_even_outside_an_enrolled_namespace() -> None:
    gateway = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: plain}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""
    wp = pod("waypoint-0", "plain", labels={"gateway.networking.k8s.io/gateway-name": "waypoint"})
    snapshot = translate(load(NAMESPACES + "---\n" + gateway), [wp])
    assert snapshot.workloads["Kubernetes//Pod/plain/waypoint-0"].tunnel_protocol is TunnelProtocol.HBONE


@pytest.mark.parametrize(
    ("labels", "name", "revision"),
    [
        ({"service.istio.io/canonical-name": "a", "app": "b", "version": "v9"}, "a", "v9"),
        ({"app.kubernetes.io/name": "kn", "app": "b", "app.kubernetes.io/version": "2"}, "kn", "2"),
        ({"app": "b", "version": "v1"}, "b", "v1"),
        ({}, "deploy", "latest"),
    ],
)
def test_canonical_name_and_revision_follow_istio_label_precedence(
    labels: dict[str, str], name: str, revision: str
) -> None:
    snapshot = translate([], [pod("p", labels=labels, deployment="deploy")])
    workload = snapshot.workloads["Kubernetes//Pod/prod/p"]
    assert (workload.canonical_name, workload.canonical_revision) == (name, revision)


SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: web-port}
    - {name: admin, port: 9000, targetPort: 9001}
    - {name: plain, port: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: prod}
spec:
  ports: [{port: 80}]
"""


@pytest.mark.parametrize(
    ("container_ports", "expected"),
    [
        ({"web-port": 8080}, {80: 8080, 9000: 9001, 7000: 7000}),
        ({"web-port": 8181}, {80: 8181, 9000: 9001, 7000: 7000}),  # named targetPort resolved per pod
        ({}, {9000: 9001, 7000: 7000}),  # no such container port: not an endpoint on that port
    ],
)
def test_service_selector_makes_endpoints_with_target_ports_resolved_per_pod(
    container_ports: dict[str, int], expected: dict[int, int]
) -> None:
    snapshot = translate(load(SERVICES), [pod("web-0", labels={"app": "web"}, container_ports=container_ports)])
    workload = snapshot.workloads["Kubernetes//Pod/prod/web-0"]
    # Only the Service of the pod's own namespace selects it; a selector-less Service selects nobody.
    assert workload.services == {"prod/web.prod.svc.cluster.local": expected}


def test_service_port_maps_to_target_port_and_named_target_ports_are_left_per_workload() -> None:
    snapshot = translate(load(SERVICES), [])
    service = snapshot.services["prod/web.prod.svc.cluster.local"]
    assert [(p.service_port, p.target_port) for p in service.ports] == [(80, 0), (9000, 9001), (7000, 7000)]
    assert (service.name, service.namespace, service.hostname) == ("web", "prod", "web.prod.svc.cluster.local")


def test_pods_without_an_address_are_identities_but_not_reachable() -> None:
    snapshot = translate(load(SERVICES), [pod("web-0", ip=None, labels={"app": "web"}, node="node-3")])
    workload = snapshot.workloads["Kubernetes//Pod/prod/web-0"]
    assert workload.addresses == () and workload.node == "node-3"
