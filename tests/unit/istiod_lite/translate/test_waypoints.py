"""Waypoint binding: ``istio.io/use-waypoint`` on namespace/service/pod and ``istio.io/waypoint-for``."""

from __future__ import annotations

import pytest

from istiod_lite.translate import MeshSnapshot, translate
from schemas.discovery import GatewayAddress
from tests.unit.istiod_lite.translate.helpers import load, pod

GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + "}"


def _mesh(ns: dict[str, str], svc: dict[str, str], waypoint_for: str | None) -> str:
    gw_labels = {"istio.io/waypoint-for": waypoint_for} if waypoint_for else {}
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: prod, labels: {_labels({"istio.io/dataplane-mode": "ambient", **ns})}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: prod, labels: {_labels(gw_labels)}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: other, namespace: prod, labels: {{istio.io/waypoint-for: all}}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: prod, labels: {_labels(svc)}}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 80}}]
"""


def _waypoint_name(address: GatewayAddress | None) -> str | None:
    if address is None:
        return None
    assert address.hostname is not None and address.hbone_mtls_port == 15008
    return address.hostname.hostname.split(".")[0]


def _bindings(
    ns: dict[str, str], svc: dict[str, str], pod_labels: dict[str, str], waypoint_for: str | None = None
) -> tuple[str | None, str | None, MeshSnapshot]:
    snapshot = translate(load(_mesh(ns, svc, waypoint_for)), [pod("api-0", labels={"app": "api", **pod_labels})])
    service = snapshot.services["prod/api.prod.svc.cluster.local"]
    workload = snapshot.workloads["Kubernetes//Pod/prod/api-0"]
    return _waypoint_name(service.waypoint), _waypoint_name(workload.waypoint), snapshot


USE = "istio.io/use-waypoint"


@pytest.mark.parametrize(
    ("ns", "svc", "pod_labels", "waypoint_for", "service_wp", "workload_wp"),
    [
        # waypoint-for defaults to service: services bind, workloads do not
        ({USE: "wp"}, {}, {}, None, "wp", None),
        ({USE: "wp"}, {}, {}, "service", "wp", None),
        ({USE: "wp"}, {}, {}, "workload", None, "wp"),
        ({USE: "wp"}, {}, {}, "all", "wp", "wp"),
        ({USE: "wp"}, {}, {}, "none", None, None),
        # the object's own label wins over its namespace's
        ({USE: "wp"}, {USE: "other"}, {}, "all", "other", "wp"),
        ({USE: "wp"}, {}, {USE: "other"}, "all", "wp", "other"),
        # `none` on the object opts it out of the namespace's waypoint
        ({USE: "wp"}, {USE: "none"}, {}, "all", None, "wp"),
        ({USE: "wp"}, {}, {USE: "none"}, "all", "wp", None),
        # a service's label binds the service only, never the pods behind it (Istio binds them apart)
        ({}, {USE: "wp"}, {}, "all", "wp", None),
        ({}, {}, {USE: "wp"}, "all", None, "wp"),
        ({}, {}, {}, "all", None, None),
    ],
)
def test_use_waypoint_binding_follows_istio_precedence_and_waypoint_for(
    ns: dict[str, str],
    svc: dict[str, str],
    pod_labels: dict[str, str],
    waypoint_for: str | None,
    service_wp: str | None,
    workload_wp: str | None,
) -> None:
    service, workload, _ = _bindings(ns, svc, pod_labels, waypoint_for)
    assert (service, workload) == (service_wp, workload_wp)


def test_binding_to_a_waypoint_of_the_wrong_traffic_type_is_reported() -> None:
    _, workload, snapshot = _bindings({}, {}, {USE: "wp"}, "service")
    assert workload is None
    assert any("pod prod/api-0 uses waypoint prod/wp" in w and "'workload'" in w for w in snapshot.warnings)


def test_binding_to_a_missing_waypoint_binds_nothing_and_is_reported() -> None:
    service, _, snapshot = _bindings({}, {USE: "ghost"}, {})
    assert service is None
    assert any("prod/ghost" in w and "no Gateway" in w for w in snapshot.warnings)


def test_use_waypoint_namespace_selects_a_waypoint_in_another_namespace() -> None:
    text = _mesh({}, {USE: "shared", "istio.io/use-waypoint-namespace": "infra"}, None) + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: infra}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""
    snapshot = translate(load(text), [])
    waypoint = snapshot.services["prod/api.prod.svc.cluster.local"].waypoint
    assert waypoint is not None and waypoint.hostname is not None
    assert waypoint.hostname.key() == "infra/shared.infra.svc.cluster.local"
    assert "prod/api.prod.svc.cluster.local" in {f"{s.namespace}/{s.hostname}"
                                                 for s in snapshot.waypoints["infra/shared"].services}


def test_a_waypoints_own_pods_and_service_are_never_bound_to_a_waypoint() -> None:
    wp_pod = pod("wp-0", ip="10.0.0.9", labels={GATEWAY_NAME: "wp"}, service_account="wp")
    snapshot = translate(load(_mesh({USE: "other"}, {}, "all")), [wp_pod])
    assert snapshot.workloads["Kubernetes//Pod/prod/wp-0"].waypoint is None
    assert snapshot.services["prod/wp.prod.svc.cluster.local"].waypoint is None


def test_each_waypoint_gets_a_service_like_istios_gateway_controller_makes() -> None:
    wp_pod = pod("wp-0", ip="10.0.0.9", labels={GATEWAY_NAME: "wp"}, service_account="wp")
    snapshot = translate(load(_mesh({}, {}, None)), [wp_pod])
    service = snapshot.services["prod/wp.prod.svc.cluster.local"]
    assert {p.service_port for p in service.ports} == {15021, 15008} and service.vips
    assert "prod/wp.prod.svc.cluster.local" in snapshot.workloads["Kubernetes//Pod/prod/wp-0"].services
    view = snapshot.waypoints["prod/wp"]
    assert view.identity == "spiffe://cluster.local/ns/prod/sa/wp"
    assert view.addresses == tuple(v.address for v in service.vips)


def test_a_waypoint_for_workloads_lists_the_workloads_it_serves() -> None:
    _, _, snapshot = _bindings({USE: "wp"}, {}, {}, "all")
    (served,) = snapshot.waypoints["prod/wp"].workloads
    assert served.uid == "Kubernetes//Pod/prod/api-0" and served.addresses == ("10.0.0.1",)


def test_a_user_written_service_for_the_waypoint_pods_is_not_bound_to_a_waypoint_either() -> None:
    own = """\
---
apiVersion: v1
kind: Service
metadata: {name: wp, namespace: prod}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: wp}
  ports: [{name: mesh, port: 15008}]
"""
    snapshot = translate(load(_mesh({USE: "wp"}, {}, None) + own), [])
    service = snapshot.services["prod/wp.prod.svc.cluster.local"]
    assert service.waypoint is None and [p.service_port for p in service.ports] == [15008]  # not replaced
