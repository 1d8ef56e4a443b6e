"""The waypoint's ``/config_dump``: what it serves right now, in the terms Istio users look for.

Routes (per service port, in match order), clusters with their policy, circuit-breaker gauges and every
endpoint's outlier state (ejected or not, time left, ejection count), L7 policies, and where the view
came from. Built on demand from live state; nothing here is cached.
"""

from __future__ import annotations

from typing import Any

import attrs

from waypoint.clusters import Clusters
from waypoint.model import Route, WeightedDestinations
from waypoint.view import WaypointView


def _route(route: Route) -> dict[str, Any]:
    action = route.action
    out: dict[str, Any] = {"name": route.name, "matches": len(route.matches) or "all"}
    if isinstance(action, WeightedDestinations):
        out["destinations"] = [
            {"cluster": d.cluster.name, "weight": d.weight} for d in action.destinations
        ]
    else:
        out["action"] = {"type": type(action).__name__, **attrs.asdict(action)}
    if route.timeout is not None:
        out["timeout_s"] = route.timeout
    if route.retry is not None:
        out["retry"] = attrs.asdict(route.retry)
    if route.fault is not None:
        out["fault"] = attrs.asdict(route.fault)
    if route.mirrors:
        out["mirrors"] = [{"cluster": m.cluster.name, "percentage": m.percentage} for m in route.mirrors]
    return out


def config_dump(
    view: WaypointView, clusters: Clusters, *, now: float, identity: str, source: str, loaded_at: float | None
) -> dict[str, Any]:
    return {
        "identity": identity,
        "view": {"source": source, "version": view.version, "age_s": None if loaded_at is None else now - loaded_at},
        "services": [attrs.asdict(service) for service in view.services],
        "routes": [
            {"service": f"{table.hostname}:{table.port}", "routes": [_route(r) for r in table.routes]}
            for table in view.route_tables
        ],
        "clusters": clusters.dump(now),
        "l7_policies": [
            {"name": policy.key, "action": policy.action.value, "targets": sorted(policy.targets),
             "rules": len(policy.rules)}
            for policy in view.l7_policies
        ],
    }
