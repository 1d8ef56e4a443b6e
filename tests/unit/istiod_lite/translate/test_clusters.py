"""DestinationRule → ClusterPolicy (Istio defaults, per-subset overrides) and subset endpoints."""

from __future__ import annotations

import pytest

from istiod_lite.translate import MeshSnapshot, translate
from tests.unit.istiod_lite.translate.helpers import load, pod
from waypoint import model
from waypoint.pushed import Cluster

NS = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 50}
        - {destination: {host: reviews, subset: v2}, weight: 50}
"""
REVIEWS = "reviews.prod.svc.cluster.local"
PODS = [
    pod("r1", ip="10.0.1.1", labels={"app": "reviews", "version": "v1"}, container_ports={"http": 9001}),
    pod("r2", ip="10.0.1.2", labels={"app": "reviews", "version": "v2"}, container_ports={"http": 9002}),
    pod("r2-pending", ip=None, labels={"app": "reviews", "version": "v2"}, container_ports={"http": 9002}),
    pod("other", "shop", ip="10.0.9.9", labels={"app": "reviews", "version": "v1"}),
]


def _dr(traffic_policy: str = "", v2_policy: str = "", namespace: str = "prod", host: str = "reviews") -> str:
    tp = f"  trafficPolicy: {traffic_policy}\n" if traffic_policy else ""
    v2 = f", trafficPolicy: {v2_policy}" if v2_policy else ""
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  host: {host}
{tp}  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}{v2}}}]
"""


def _clusters(dr: str) -> dict[str, Cluster]:
    snapshot: MeshSnapshot = translate(load(NS + "---\n" + dr), PODS)
    return {c.key.subset: c for c in snapshot.waypoints["prod/wp"].clusters}


def test_subset_endpoints_are_the_service_pods_with_the_subset_labels_on_their_own_target_port() -> None:
    clusters = _clusters(_dr())
    assert [(e.address, e.port) for e in clusters["v1"].endpoints] == [("10.0.1.1", 9001)]
    assert [(e.address, e.port) for e in clusters["v2"].endpoints] == [("10.0.1.2", 9002)]  # no pending pods
    assert clusters["v1"].endpoints[0].labels == (("app", "reviews"), ("version", "v1"))


@pytest.mark.parametrize(
    ("traffic_policy", "expected"),
    [
        ("", model.ClusterPolicy(lb=model.LbAlgorithm.LEAST_REQUEST)),  # Istio's default balancer
        ("{loadBalancer: {simple: ROUND_ROBIN}}", model.ClusterPolicy(lb=model.LbAlgorithm.ROUND_ROBIN)),
        ("{loadBalancer: {simple: LEAST_CONN}}", model.ClusterPolicy(lb=model.LbAlgorithm.LEAST_REQUEST)),
        ("{loadBalancer: {simple: RANDOM}}", model.ClusterPolicy(lb=model.LbAlgorithm.RANDOM)),
        (
            "{loadBalancer: {consistentHash: {httpHeaderName: X-User}}}",
            model.ClusterPolicy(lb=model.LbAlgorithm.RING_HASH, consistent_hash=model.ConsistentHash(header="x-user")),
        ),
        (
            "{connectionPool: {tcp: {maxConnections: 5, connectTimeout: 2s}, "
            "http: {http1MaxPendingRequests: 1, http2MaxRequests: 7, maxRequestsPerConnection: 3, maxRetries: 2}}}",
            model.ClusterPolicy(
                lb=model.LbAlgorithm.LEAST_REQUEST,
                connection_pool=model.ConnectionPoolSettings(
                    max_connections=5, connect_timeout=2.0, http1_max_pending_requests=1,
                    http2_max_requests=7, max_requests_per_connection=3, max_retries=2),
            ),
        ),
        (
            "{outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 15s, "
            "maxEjectionPercent: 50}}",
            model.ClusterPolicy(
                lb=model.LbAlgorithm.LEAST_REQUEST,
                outlier_detection=model.OutlierDetection(
                    consecutive_5xx=3, interval=1.0, base_ejection_time=15.0, max_ejection_percent=50),
            ),
        ),
        (
            "{outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}}",  # 0 disables 5xx
            model.ClusterPolicy(
                lb=model.LbAlgorithm.LEAST_REQUEST,
                outlier_detection=model.OutlierDetection(consecutive_5xx=None, consecutive_gateway_errors=2),
            ),
        ),
    ],
)
def test_destination_rule_traffic_policy_becomes_the_cluster_policy(
    traffic_policy: str, expected: model.ClusterPolicy
) -> None:
    clusters = _clusters(_dr(traffic_policy))
    assert clusters["v1"].policy == clusters["v2"].policy == expected


def test_a_subset_traffic_policy_overrides_only_the_parts_it_sets() -> None:
    clusters = _clusters(_dr(
        "{loadBalancer: {simple: RANDOM}, connectionPool: {tcp: {maxConnections: 9}}}",
        "{loadBalancer: {simple: ROUND_ROBIN}}",
    ))
    assert clusters["v1"].policy.lb is model.LbAlgorithm.RANDOM
    assert clusters["v2"].policy.lb is model.LbAlgorithm.ROUND_ROBIN
    assert clusters["v2"].policy.connection_pool.max_connections == 9  # inherited from the top level


@pytest.mark.parametrize(
    ("dr", "found"),
    [
        (_dr(host="reviews"), True),  # short host in the rule's own namespace
        (_dr(host="reviews.prod.svc.cluster.local"), True),
        (_dr(host="'*.prod.svc.cluster.local'"), True),  # wildcard hosts cover the service
        (_dr(host="reviews", namespace="istio-system"), False),  # short host: istio-system's reviews
        (_dr(host="reviews.prod.svc.cluster.local", namespace="istio-system"), True),
    ],
)
def test_destination_rule_host_resolution(dr: str, found: bool) -> None:
    clusters = _clusters(dr)
    assert bool(clusters["v1"].endpoints) is found
