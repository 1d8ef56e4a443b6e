"""Endpoint choice: weighted by capacity among healthy endpoints, target port per ztunnel's rules."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from schemas.discovery import (
    HealthPolicy,
    LoadBalancing,
    LoadBalancingMode,
    LocalityScope,
    Service,
    ServicePort,
    Workload,
    WorkloadStatus,
)
from ztunnel.lb import NoHealthyEndpoints, UnknownServicePort, choose_endpoint, target_port

KEY = "prod/api.prod.svc.cluster.local"


def service(
    *ports: ServicePort, load_balancing: LoadBalancing | None = None
) -> Service:
    return Service(
        name="api", namespace="prod", hostname="api.prod.svc.cluster.local",
        ports=ports or (ServicePort(service_port=80, target_port=8080),), load_balancing=load_balancing,
    )


def endpoint(
    name: str,
    *,
    capacity: int = 1,
    status: WorkloadStatus = WorkloadStatus.HEALTHY,
    ports: dict[int, int] | None = None,
    addresses: tuple[str, ...] = ("10.0.0.1",),
    node: str = "node-a",
    network: str = "",
) -> Workload:
    return Workload(
        uid=f"cluster1//v1/Pod/prod/{name}", name=name, namespace="prod", addresses=addresses,
        capacity=capacity, status=status, services={KEY: ports if ports is not None else {80: 8080}},
        node=node, network=network,
    )


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return mean - sigmas * sd, mean + sigmas * sd


def test_selection_is_weighted_by_capacity() -> None:
    """Istio: capacity is a relative weight; 1:3 means a quarter of connections go to the first."""
    light, heavy = endpoint("light", capacity=1), endpoint("heavy", capacity=3)
    rng = random.Random(20240611)
    draws = 4000
    counts = Counter(choose_endpoint(service(), [light, heavy], 80, rng).workload.name for _ in range(draws))
    low, high = binomial_bounds(draws, 0.75)
    assert low <= counts["heavy"] <= high
    assert counts["light"] + counts["heavy"] == draws


def test_equal_capacity_spreads_evenly() -> None:
    eps = [endpoint(f"p{i}") for i in range(3)]
    rng = random.Random(7)
    draws = 3000
    counts = Counter(choose_endpoint(service(), eps, 80, rng).workload.name for _ in range(draws))
    low, high = binomial_bounds(draws, 1 / 3)
    assert all(low <= counts[f"p{i}"] <= high for i in range(3)), counts


@pytest.mark.parametrize(
    ("excluded", "declared_target"),
    [
        pytest.param(endpoint("sick", status=WorkloadStatus.UNHEALTHY), 8080,
                     id="unhealthy-endpoints-get-no-traffic (ONLY_HEALTHY)"),
        pytest.param(endpoint("drained", capacity=0), 8080, id="capacity-0-drains-an-endpoint"),
        pytest.param(endpoint("no-ip", addresses=()), 8080, id="endpoint-without-address-cannot-be-dialled"),
        pytest.param(endpoint("named", ports={}), 0,
                     id="named-targetPort-unresolved (service target 0, no endpoint mapping)"),
    ],
)
def test_only_servable_endpoints_are_chosen(excluded: Workload, declared_target: int) -> None:
    svc = service(ServicePort(service_port=80, target_port=declared_target))
    good = endpoint("good", ports={80: 9090})
    rng = random.Random(1)
    assert {choose_endpoint(svc, [excluded, good], 80, rng).workload.name for _ in range(200)} == {"good"}


def test_allow_all_health_policy_keeps_unhealthy_endpoints() -> None:
    svc = service(load_balancing=LoadBalancing(health_policy=HealthPolicy.ALLOW_ALL))
    sick = endpoint("sick", status=WorkloadStatus.UNHEALTHY)
    assert choose_endpoint(svc, [sick], 80, random.Random(1)).workload is sick


def test_no_healthy_endpoints_is_a_typed_error_with_a_hint() -> None:
    with pytest.raises(NoHealthyEndpoints) as caught:
        choose_endpoint(service(), [endpoint("sick", status=WorkloadStatus.UNHEALTHY)], 80, random.Random(1))
    assert caught.value.response_flag == "UH"
    assert "prod/api.prod.svc.cluster.local" in str(caught.value)
    with pytest.raises(NoHealthyEndpoints):
        choose_endpoint(service(), [], 80, random.Random(1))


def test_port_not_on_the_service_is_unknown_even_if_an_endpoint_maps_it() -> None:
    with pytest.raises(UnknownServicePort, match="has no port 81"):
        choose_endpoint(service(), [endpoint("a", ports={81: 8181})], 81, random.Random(1))


@pytest.mark.parametrize(
    ("declared", "own", "expected"),
    [
        pytest.param(8080, {80: 9090}, 9090, id="endpoint-mapping-wins (named targetPort per pod)"),
        pytest.param(8080, {}, 8080, id="service-target-port-when-endpoint-has-none"),
        pytest.param(0, {80: 7070}, 7070, id="service-target-zero-defers-to-endpoint"),
        pytest.param(0, {}, None, id="unresolvable"),
    ],
)
def test_target_port_resolution(declared: int, own: dict[int, int], expected: int | None) -> None:
    svc = service(ServicePort(service_port=80, target_port=declared))
    assert target_port(svc, endpoint("a", ports=own), 80) == expected


def test_chosen_endpoint_carries_resolved_target_port() -> None:
    chosen = choose_endpoint(service(), [endpoint("a", ports={80: 9090})], 80, random.Random(1))
    assert chosen.target_port == 9090


def test_waypoint_lookup_uses_the_port_as_given() -> None:
    waypoint_service = service(ServicePort(service_port=15021, target_port=15021))
    wp = endpoint("waypoint", ports={15021: 15021})
    chosen = choose_endpoint(waypoint_service, [wp], 15008, random.Random(1), require_port=False)
    assert (chosen.workload, chosen.target_port) == (wp, 15008)


SOURCE = endpoint("client", node="node-a", network="")


@pytest.mark.parametrize(
    ("mode", "endpoints", "expected"),
    [
        pytest.param(LoadBalancingMode.FAILOVER, [endpoint("near", node="node-a"), endpoint("far", node="node-b")],
                     {"near"}, id="failover-prefers-same-node"),
        pytest.param(LoadBalancingMode.FAILOVER, [endpoint("far", node="node-b"), endpoint("far2", node="node-c")],
                     {"far", "far2"}, id="failover-falls-back-when-none-local"),
        pytest.param(LoadBalancingMode.STRICT, [endpoint("near", node="node-a"), endpoint("far", node="node-b")],
                     {"near"}, id="strict-keeps-only-local"),
        pytest.param(LoadBalancingMode.STANDARD, [endpoint("near", node="node-a"), endpoint("far", node="node-b")],
                     {"near", "far"}, id="standard-ignores-preferences"),
    ],
)
def test_routing_preference_by_node(mode: LoadBalancingMode, endpoints: list[Workload], expected: set[str]) -> None:
    svc = service(load_balancing=LoadBalancing(mode=mode, routing_preference=(LocalityScope.NODE,)))
    rng = random.Random(3)
    assert {choose_endpoint(svc, endpoints, 80, rng, source=SOURCE).workload.name for _ in range(200)} == expected


def test_strict_with_no_local_endpoint_fails() -> None:
    svc = service(load_balancing=LoadBalancing(
        mode=LoadBalancingMode.STRICT, routing_preference=(LocalityScope.NETWORK, LocalityScope.NODE)))
    with pytest.raises(NoHealthyEndpoints):
        choose_endpoint(svc, [endpoint("remote", network="net-b")], 80, random.Random(1), source=SOURCE)
