"""The entry point: user resources + pod inventory → everything istiod_lite pushes (a MeshSnapshot).

Order matters only where one result feeds another: waypoints first (services and pods bind to them),
then VIPs, services, L4 authorization (workloads list the selector policies that apply to them),
workloads, and last the waypoint views (they need services, identities and policies). Translation is
pure: same input, same snapshot, byte for byte in :meth:`MeshSnapshot.to_push` — given the same
:class:`~istiod_lite.translate.vips.VipAllocator` history. Problems that do not stop translation
(a subset nobody defines, an L7 attribute in a ztunnel policy …) are returned as ``warnings``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from istiod_lite.translate import authorization, clusters, l7policies, peerauth, routes, services
from istiod_lite.translate.attachment import unattached_warnings
from istiod_lite.translate.inputs import (
    DEFAULT_CLUSTER_DOMAIN,
    GATEWAY_NAME,
    ROOT_NAMESPACE,
    Inventory,
    PodInfo,
    pods_from_deployments,
)
from istiod_lite.translate.vips import VipAllocator
from istiod_lite.translate.waypoints import (
    Waypoint,
    find_waypoints,
    is_waypoint_pod,
    waypoint_for_pod,
    waypoint_for_service,
    waypoint_service_resources,
)
from istiod_lite.translate.workloads import build_workload
from schemas import core, security
from schemas.common import namespace_of
from schemas.discovery import Authorization, Scope, Service, Workload
from schemas.discovery import to_json as discovery_json
from schemas.kinds import Resource
from waypoint import model
from waypoint import pushed as view

JSON = Any


@attrs.frozen(kw_only=True)
class MeshSnapshot:
    workloads: Mapping[str, Workload]
    services: Mapping[str, Service]
    authorizations: Mapping[str, Authorization]
    waypoints: Mapping[str, view.WaypointView]
    warnings: tuple[str, ...] = ()

    def to_push(self) -> dict[str, dict[str, JSON]]:
        """Push type → key → JSON body (``workload``, ``service``, ``authorization``, ``waypoint``)."""
        return {
            "workload": {k: discovery_json(v) for k, v in sorted(self.workloads.items())},
            "service": {k: discovery_json(v) for k, v in sorted(self.services.items())},
            "authorization": {k: discovery_json(v) for k, v in sorted(self.authorizations.items())},
            view.TYPE_NAME: {k: view.to_json(v) for k, v in sorted(self.waypoints.items())},
        }


def _identity(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@attrs.frozen(kw_only=True)
class _Context:
    inventory: Inventory
    trust_domain: str
    waypoints: Mapping[str, Waypoint]
    all_services: tuple[core.Service, ...]
    service_waypoints: Mapping[str, Waypoint]  # service key (ns/name) → waypoint key
    pod_waypoints: Mapping[str, Waypoint]  # ns/pod → waypoint
    vips: Mapping[str, tuple[str, ...]]  # hostname → VIPs
    workloads: Mapping[str, Workload]
    index: services.EndpointIndex


def translate(
    resources: Sequence[Resource],
    pods: Sequence[PodInfo],
    *,
    trust_domain: str = "cluster.local",
    vip_allocator: VipAllocator | None = None,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    root_namespace: str = ROOT_NAMESPACE,
) -> MeshSnapshot:
    """Translate with Istio's rules (see the modules of this package for each rule and its source)."""
    warnings: list[str] = []
    inventory = Inventory.build(resources, pods, cluster_domain=cluster_domain, root_namespace=root_namespace)
    waypoints = find_waypoints(inventory, warnings)
    all_services = inventory.services + tuple(waypoint_service_resources(inventory, waypoints))

    allocator = vip_allocator if vip_allocator is not None else VipAllocator()
    reserved = [ip for ip in (services.explicit_vip(s) for s in all_services) if ip is not None]
    auto = [services.service_key(inventory, s) for s in all_services
            if not services.is_headless(s) and services.explicit_vip(s) is None]
    allocated = allocator.allocate_all(auto, reserved)

    pushed_services: dict[str, Service] = {}
    service_waypoints: dict[str, Waypoint] = {}
    for svc in all_services:
        key = services.service_key(inventory, svc)
        waypoint = waypoint_for_service(inventory, waypoints, svc, warnings)
        if waypoint is not None:
            service_waypoints[f"{namespace_of(svc.metadata)}/{svc.metadata.name}"] = waypoint
        vip = services.explicit_vip(svc) or allocated.get(key)
        pushed_services[key] = services.to_discovery(
            inventory, svc, vip, waypoint.address if waypoint is not None else None)

    authorizations: dict[str, Authorization] = {}
    selector_policies: list[security.AuthorizationPolicy] = []
    for policy in inventory.authorization_policies:
        converted = authorization.convert(policy, inventory, warnings)
        if converted is None:
            continue
        authorizations[f"{converted.namespace}/{converted.name}"] = converted
        if converted.scope is Scope.WORKLOAD_SELECTOR:
            selector_policies.append(policy)

    index = services.EndpointIndex(all_services, inventory.pods)
    pod_services: dict[str, dict[str, dict[int, int]]] = {}
    for svc in all_services:
        for member, ports in index.members(svc):
            pod_services.setdefault(f"{member.namespace}/{member.name}", {})[
                services.service_key(inventory, svc)] = ports

    workloads: dict[str, Workload] = {}
    pod_waypoints: dict[str, Waypoint] = {}
    for pod in inventory.pods:
        waypoint = waypoint_for_pod(inventory, waypoints, pod, warnings)
        if waypoint is not None:
            pod_waypoints[f"{pod.namespace}/{pod.name}"] = waypoint
        keys = [f"{namespace_of(p.metadata)}/{p.metadata.name}" for p in selector_policies
                if authorization.selects(p, pod, inventory.root_namespace)]
        strict = peerauth.policy_for(inventory, pod)
        if strict is not None:
            strict_key = f"{strict.namespace}/{strict.name}"
            authorizations[strict_key] = strict
            keys.append(strict_key)
        workload = build_workload(
            inventory, pod, services=pod_services.get(f"{pod.namespace}/{pod.name}", {}), trust_domain=trust_domain,
            waypoint=waypoint.address if waypoint is not None else None,
            is_waypoint=is_waypoint_pod(pod, waypoints), policies=tuple(keys))
        workloads[workload.uid] = workload

    context = _Context(
        inventory=inventory,
        trust_domain=trust_domain,
        waypoints=waypoints,
        all_services=all_services,
        service_waypoints=service_waypoints,
        pod_waypoints=pod_waypoints,
        vips={s.hostname: tuple(v.address for v in s.vips) for s in pushed_services.values()},
        workloads=workloads,
        index=index,
    )
    views = {key: _waypoint_view(context, waypoint, warnings) for key, waypoint in waypoints.items()}
    served = {inventory.hostname(s) for s in all_services
              if f"{namespace_of(s.metadata)}/{s.metadata.name}" in service_waypoints}
    warnings += unattached_warnings(inventory, {inventory.hostname(s) for s in all_services}, served)
    return MeshSnapshot(
        workloads=workloads,
        services=pushed_services,
        authorizations=authorizations,
        waypoints=views,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _waypoint_identity(context: _Context, waypoint: Waypoint) -> str:
    """The waypoint pods' service account; Istio's default for a waypoint is one named like it."""
    for pod in context.inventory.pods:
        if pod.namespace == waypoint.namespace and pod.labels.get(GATEWAY_NAME) == waypoint.name:
            return _identity(context.trust_domain, pod.namespace, pod.service_account)
    return _identity(context.trust_domain, waypoint.namespace, waypoint.name)


def _cluster_keys(tables: Sequence[model.RouteTable]) -> list[model.ClusterKey]:
    keys: dict[model.ClusterKey, None] = {}
    for table in tables:
        for route in table.routes:
            if isinstance(route.action, model.WeightedDestinations):
                keys.update((d.cluster, None) for d in route.action.destinations)
            keys.update((m.cluster, None) for m in route.mirrors)
    return list(keys)


def _waypoint_view(context: _Context, waypoint: Waypoint, warnings: list[str]) -> view.WaypointView:
    inventory = context.inventory
    served = [s for s in context.all_services
              if context.service_waypoints.get(f"{namespace_of(s.metadata)}/{s.metadata.name}") == waypoint]
    refs = routes.service_refs(inventory, context.all_services)
    tables = [t for s in served for t in routes.route_tables(inventory, refs[inventory.hostname(s)], refs, warnings)]
    by_hostname = {inventory.hostname(s): s for s in context.all_services}
    identities = {f"{w.namespace}/{w.name}": w.identity for w in context.workloads.values()}
    cluster_views = []
    for key in _cluster_keys(tables):
        policy, endpoints = clusters.build_cluster(
            key, inventory, by_hostname, context.index, identities, waypoint.namespace, warnings)
        cluster_views.append(view.Cluster(key=key, policy=policy, endpoints=endpoints))
    served_keys = {f"{namespace_of(s.metadata)}/{s.metadata.name}" for s in served}
    hostnames = l7policies.served_services(inventory, served_keys)
    policies = [p for p in (l7policies.convert(policy, waypoint, hostnames, inventory, warnings)
                            for policy in inventory.authorization_policies) if p is not None]
    bound_workloads = [
        view.ServedWorkload(uid=w.uid, addresses=w.addresses, identity=w.identity)
        for w in context.workloads.values()
        if context.pod_waypoints.get(f"{w.namespace}/{w.name}") == waypoint
    ]
    return view.WaypointView(
        name=waypoint.name,
        namespace=waypoint.namespace,
        hostname=waypoint.hostname,
        identity=_waypoint_identity(context, waypoint),
        traffic_type=waypoint.traffic_type,
        addresses=context.vips.get(waypoint.hostname, ()),
        services=tuple(_served(s, inventory, context.vips) for s in served),
        route_tables=tuple(tables),
        clusters=tuple(cluster_views),
        policies=tuple(policies),
        workloads=tuple(bound_workloads),
    )


def _served(svc: core.Service, inventory: Inventory, vips: Mapping[str, tuple[str, ...]]) -> view.ServedService:
    hostname = inventory.hostname(svc)
    return view.ServedService(
        name=svc.metadata.name,
        namespace=namespace_of(svc.metadata),
        hostname=hostname,
        vips=vips.get(hostname, ()),
        ports=tuple(
            view.ServedPort(
                port=p.port,
                target_port=services.static_target_port(p),
                app_protocol=services.app_protocol(p),
            )
            for p in svc.spec.ports
        ),
    )


_PROCESS_ALLOCATOR = VipAllocator()


def translate_to_push(
    resources: Sequence[Resource], pods: Sequence[PodInfo] | None = None
) -> dict[str, dict[str, JSON]]:
    """istiod_lite's translation seam (``server.Translator``). Until the runner reports pods, the pod
    inventory is derived from the Deployments (placement and identity, no addresses). One allocator
    per process keeps VIPs where they were across rebuilds."""
    inventory_pods = list(pods) if pods is not None else pods_from_deployments(resources)
    return translate(resources, inventory_pods, vip_allocator=_PROCESS_ALLOCATOR).to_push()
