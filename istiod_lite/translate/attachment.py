"""Warnings for L7 configuration that nothing enforces, because in ambient mode only waypoints do L7.

A VirtualService, an HTTPRoute with a Service parent, or a ``targetRefs`` AuthorizationPolicy for a
service that no waypoint serves is accepted by Istio and then silently has no effect — the most
common surprise when moving from sidecars to ambient. Saying so (and what to label) is cheap.
"""

from __future__ import annotations

from collections.abc import Collection

from istiod_lite.translate.inputs import Inventory, resolve_host
from istiod_lite.translate.routes import host_covers
from schemas import gateway
from schemas.common import namespace_of

_FIX = "label the Service or its Namespace with istio.io/use-waypoint=<waypoint> to have a waypoint apply it"


def unattached_warnings(
    inventory: Inventory, hostnames: Collection[str], served: Collection[str]
) -> list[str]:
    """``hostnames``: every Service hostname; ``served``: those a waypoint serves."""
    out = []
    for vs in inventory.virtual_services:
        if vs.spec.gateways and "mesh" not in vs.spec.gateways:
            continue
        namespace = namespace_of(vs.metadata)
        hosts = [resolve_host(h, namespace, inventory.cluster_domain) for h in vs.spec.hosts]
        bound = [h for h in hostnames if any(host_covers(p, h) for p in hosts)]
        if bound and not any(h in served for h in bound):
            out.append(f"VirtualService {namespace}/{vs.metadata.name} binds {', '.join(sorted(bound))}, which no "
                       f"waypoint serves, so it has no effect in ambient mode; {_FIX}")
    for route in inventory.http_routes:
        namespace = namespace_of(route.metadata)
        for ref in route.spec.parent_refs:
            if not gateway.is_service_parent(ref):
                continue
            host = resolve_host(ref.name, ref.namespace or namespace, inventory.cluster_domain)
            if host in hostnames and host not in served:
                out.append(f"HTTPRoute {namespace}/{route.metadata.name} is attached to {host}, which no waypoint "
                           f"serves, so it has no effect; {_FIX}")
    for policy in inventory.authorization_policies:
        namespace = namespace_of(policy.metadata)
        refs = policy.spec.target_refs or ((policy.spec.target_ref,) if policy.spec.target_ref else ())
        for target in refs:
            if target.kind != "Service":
                continue
            host = resolve_host(target.name, target.namespace or namespace, inventory.cluster_domain)
            if host not in served:
                out.append(f"AuthorizationPolicy {namespace}/{policy.metadata.name} targets {host}, which no "
                           f"waypoint serves, so nothing enforces it; {_FIX}")
    return out
