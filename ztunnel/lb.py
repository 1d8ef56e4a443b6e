"""Endpoint choice for a service: random, weighted by capacity, among healthy endpoints.

This is ztunnel's L4 load balancing (per connection, no request awareness). The randomness is
injected so tests fix a seed and the policy stays a pure function of its inputs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

from meshcore.errors import MeshError
from schemas.discovery import (
    HealthPolicy,
    LoadBalancing,
    LoadBalancingMode,
    LocalityScope,
    Service,
    Workload,
    WorkloadStatus,
    resource_key,
)


class NoHealthyEndpoints(MeshError):
    """Every endpoint of the service is unhealthy, drained (capacity 0), filtered, or there are none."""

    response_flag = "UH"
    hint = (
        "service {service} has no healthy endpoint for port {port}; check that its pods are running "
        "and ready, and that they list the service with this port"
    )


class UnknownServicePort(MeshError):
    response_flag = "NR"
    hint = "service {service} does not expose port {port}; check the Service's ports"


@attrs.frozen(kw_only=True)
class ChosenEndpoint:
    workload: Workload
    target_port: int


def target_port(service: Service, endpoint: Workload, service_port: int) -> int | None:
    """The endpoint's own mapping wins (a named targetPort resolves per pod), else the service's."""
    own = endpoint.services.get(resource_key(service), {}).get(service_port)
    if own:
        return own
    declared = service.port(service_port)
    if declared is not None and declared.target_port:
        return declared.target_port
    return None


def choose_endpoint(
    service: Service,
    endpoints: Sequence[Workload],
    service_port: int,
    rng: random.Random,
    *,
    source: Workload | None = None,
    require_port: bool = True,
) -> ChosenEndpoint:
    """Pick one of ``endpoints`` (workloads listing ``service``) for a connection to ``service_port``.

    ``require_port=False`` is the waypoint lookup: a waypoint is dialled on its HBONE port, which is
    not one of the waypoint service's ports, so the port is used as is.
    """
    if require_port and service.port(service_port) is None:
        raise UnknownServicePort(
            f"service {resource_key(service)} has no port {service_port}",
            service=resource_key(service), port=service_port,
        )
    policy = service.load_balancing or LoadBalancing()
    candidates: list[ChosenEndpoint] = []
    for endpoint in endpoints:
        if policy.health_policy is HealthPolicy.ONLY_HEALTHY and endpoint.status is not WorkloadStatus.HEALTHY:
            continue
        if not endpoint.addresses or endpoint.capacity <= 0:
            continue
        port = target_port(service, endpoint, service_port) if require_port else service_port
        if port is None:
            continue
        candidates.append(ChosenEndpoint(workload=endpoint, target_port=port))
    candidates = _by_locality(candidates, policy, source)
    if not candidates:
        raise NoHealthyEndpoints(
            f"no healthy endpoints for {resource_key(service)}:{service_port}",
            service=resource_key(service), port=service_port,
        )
    weights = [chosen.workload.capacity for chosen in candidates]
    return rng.choices(candidates, weights=weights, k=1)[0]


def _by_locality(
    candidates: list[ChosenEndpoint], policy: LoadBalancing, source: Workload | None
) -> list[ChosenEndpoint]:
    """STRICT keeps endpoints matching every preferred scope; FAILOVER keeps the best-ranked group.

    A rank is the number of leading scopes the endpoint shares with the source, as in ztunnel.
    """
    if policy.mode not in (LoadBalancingMode.STRICT, LoadBalancingMode.FAILOVER) or source is None:
        return candidates
    if not policy.routing_preference:
        return candidates

    def rank(chosen: ChosenEndpoint) -> int:
        count = 0
        for scope in policy.routing_preference:
            same = (chosen.workload.node == source.node) if scope is LocalityScope.NODE \
                else (chosen.workload.network == source.network)
            if not same:
                break
            count += 1
        return count

    ranked = [(rank(chosen), chosen) for chosen in candidates]
    if policy.mode is LoadBalancingMode.STRICT:
        wanted = len(policy.routing_preference)
    else:
        wanted = max((r for r, _ in ranked), default=0)
    return [chosen for r, chosen in ranked if r == wanted]
