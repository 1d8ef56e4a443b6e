"""The mission's canary, end to end through translation: the Foundation issue's VirtualService,
unchanged, applied in ``prod`` beside a DestinationRule with subsets v1/v2 by ``version``, must give
the waypoint a 95/5 route for the host clients call whose clusters hold exactly the v1 / v2 pods."""

from __future__ import annotations

import json

from istiod_lite.translate import MeshSnapshot, translate
from tests.unit.istiod_lite.translate.helpers import load, pod
from waypoint import model
from waypoint.pushed import from_json, to_process_view
from waypoint.view import view_from_json, view_to_json
from ztunnel.state import DestinationKind, ProxyState

# Verbatim from `issues show 2` (no namespace: applied with -n prod, as an Istio user would).
CANARY_VS = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: search-service
spec:
  hosts:
    - search-api.prod.svc.cluster.local
  http:
    - route:
        - destination:
            host: search-service
            subset: v1
          weight: 95
        - destination:
            host: search-service
            subset: v2
          weight: 5
"""

MESH = """\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: prod
spec:
  gatewayClassName: istio-waypoint
  listeners:
    - name: mesh
      port: 15008
      protocol: HBONE
---
apiVersion: v1
kind: Service
metadata:
  name: search-api
  namespace: prod
spec:
  selector:
    app: search
  ports:
    - name: http
      port: 8080
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: search-service
  namespace: prod
spec:
  selector:
    app: search
  ports:
    - name: http
      port: 8080
      targetPort: http
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: search-service
  namespace: prod
spec:
  host: search-service
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
"""

HOST = "search-api.prod.svc.cluster.local"
TARGET = "search-service.prod.svc.cluster.local"
PODS = [
    pod("search-v1-0", ip="10.0.1.1", labels={"app": "search", "version": "v1"}, deployment="search-v1",
        container_ports={"http": 9001}, service_account="search"),
    pod("search-v1-1", ip="10.0.1.2", labels={"app": "search", "version": "v1"}, deployment="search-v1",
        container_ports={"http": 9001}, service_account="search", node="node-1"),
    pod("search-v2-0", ip="10.0.2.1", labels={"app": "search", "version": "v2"}, deployment="search-v2",
        container_ports={"http": 9002}, service_account="search"),
    pod("waypoint-0", ip="10.0.9.1", labels={"gateway.networking.k8s.io/gateway-name": "waypoint"},
        service_account="waypoint"),
    pod("client-0", ip="10.0.3.1", labels={"app": "client"}, deployment="client"),
]


def _snapshot() -> MeshSnapshot:
    return translate([*load(MESH), *load(CANARY_VS, namespace="prod")], PODS)


def test_canary_virtual_service_splits_95_5_to_the_v1_and_v2_pods() -> None:
    snapshot = _snapshot()
    view = snapshot.waypoints["prod/waypoint"]
    table = view.route_table(HOST, 8080)
    assert table is not None
    (route,) = table.routes
    assert isinstance(route.action, model.WeightedDestinations)
    split = {d.cluster.subset: (d.cluster, d.weight) for d in route.action.destinations}
    assert {subset: weight for subset, (_, weight) in split.items()} == {"v1": 95, "v2": 5}
    v1, v2 = split["v1"][0], split["v2"][0]
    assert (v1.hostname, v1.port) == (v2.hostname, v2.port) == (TARGET, 8080)
    endpoints = {c.key.subset: {(e.address, e.port) for e in c.endpoints} for c in view.clusters}
    assert endpoints["v1"] == {("10.0.1.1", 9001), ("10.0.1.2", 9001)}
    assert endpoints["v2"] == {("10.0.2.1", 9002)}
    cluster_v1 = view.cluster(v1)
    assert cluster_v1 is not None
    assert {e.identity for e in cluster_v1.endpoints} == {"spiffe://cluster.local/ns/prod/sa/search"}
    assert not [w for w in snapshot.warnings if "subset" in w]


def test_canary_host_is_served_by_the_namespace_waypoint() -> None:
    snapshot = _snapshot()
    api = snapshot.services[f"prod/{HOST}"]
    assert api.waypoint is not None and api.waypoint.hostname is not None
    assert api.waypoint.hostname.hostname == "waypoint.prod.svc.cluster.local"
    assert {s.hostname for s in snapshot.waypoints["prod/waypoint"].services} >= {HOST, TARGET}
    # The waypoint is reachable the way ztunnel looks it up: a pushed Service with its pods behind it.
    wp_service = snapshot.services["prod/waypoint.prod.svc.cluster.local"]
    assert wp_service.waypoint is None
    wp_pod = snapshot.workloads["Kubernetes//Pod/prod/waypoint-0"]
    assert "prod/waypoint.prod.svc.cluster.local" in wp_pod.services and wp_pod.waypoint is None


def test_canary_view_survives_the_push_json_round_trip() -> None:
    snapshot = _snapshot()
    body = snapshot.to_push()["waypoint"]["prod/waypoint"]
    decoded = from_json(json.loads(json.dumps(body)))
    assert decoded == snapshot.waypoints["prod/waypoint"]


def test_rollback_to_100_0_leaves_v2_without_traffic() -> None:
    rolled = CANARY_VS.replace("weight: 95", "weight: 100").replace("weight: 5", "weight: 0")
    snapshot = translate([*load(MESH), *load(rolled, namespace="prod")], PODS)
    table = snapshot.waypoints["prod/waypoint"].route_table(HOST, 8080)
    assert table is not None and isinstance(table.routes[0].action, model.WeightedDestinations)
    weights = {d.cluster.subset: d.weight for d in table.routes[0].action.destinations}
    assert weights == {"v1": 100, "v2": 0}


def test_canary_view_loads_in_the_waypoint_process_and_binds_the_vip() -> None:
    snapshot = _snapshot()
    loaded = view_from_json(json.loads(json.dumps(view_to_json(to_process_view(snapshot.waypoints["prod/waypoint"])))))
    (vip,) = snapshot.services[f"prod/{HOST}"].vips
    binding = loaded.service_for(vip.address, 8080)
    assert binding is not None and (binding.hostname, binding.app_protocol) == (HOST, "http")
    assert {c.key.subset for c in loaded.clusters} == {"v1", "v2", ""}  # "": search-service's own default route


def test_without_a_waypoint_the_canary_rule_has_no_effect_and_translation_says_so() -> None:
    no_waypoint = MESH.replace("    istio.io/use-waypoint: waypoint\n", "")
    snapshot = translate([*load(no_waypoint), *load(CANARY_VS, namespace="prod")], PODS)
    assert snapshot.services[f"prod/{HOST}"].waypoint is None
    assert any(
        "VirtualService prod/search-service" in w and "no waypoint serves" in w and "istio.io/use-waypoint" in w
        for w in snapshot.warnings
    )
    assert not [w for w in _snapshot().warnings if "no waypoint serves" in w]


def test_a_ztunnel_fed_the_canary_sends_clients_to_the_waypoint_and_the_waypoint_straight_on() -> None:
    pushed = json.loads(json.dumps(_snapshot().to_push()))
    state = ProxyState()
    for type_name in ("workload", "service", "authorization"):
        state.apply(type_name, list(pushed[type_name].values()), replace=True)
    (vip,) = (v["address"] for v in pushed["service"][f"prod/{HOST}"]["vips"])
    client = state.workload("Kubernetes//Pod/prod/client-0")
    to_api = state.find_destination(vip, 8080, client)
    assert (to_api.kind, to_api.address, to_api.port) == (DestinationKind.WAYPOINT, "10.0.9.1", 15008)
    assert to_api.authority == f"{vip}:8080"
    assert to_api.expected_identities == ("spiffe://cluster.local/ns/prod/sa/waypoint",)
    waypoint = state.workload("Kubernetes//Pod/prod/waypoint-0")
    (target_vip,) = (v["address"] for v in pushed["service"][f"prod/{TARGET}"]["vips"])
    onward = state.find_destination(target_vip, 8080, waypoint)
    assert onward.kind is DestinationKind.DIRECT and onward.address.startswith("10.0.")
    assert onward.address != "10.0.9.1" and onward.authority in (f"{onward.address}:9001", f"{onward.address}:9002")
