"""Translation with Istio's ambient rules: user resources + pods → what every proxy is pushed.

``translate(resources, pods, *, trust_domain, vip_allocator, …) -> MeshSnapshot`` is the entry point;
``MeshSnapshot.to_push()`` gives ``{"workload"|"service"|"authorization"|"waypoint": {key: JSON}}``.
One module per rule set, each naming the Istio behaviour it follows:

* :mod:`.inputs` — :class:`PodInfo` (the pod inventory) and the resource index; short-name resolution;
* :mod:`.workloads` — uids, ambient enrolment, canonical names;
* :mod:`.services` — Service → pushed Service, endpoints and (named) target ports;
* :mod:`.vips` — deterministic, sticky VIPs from 240.240.0.0/16;
* :mod:`.waypoints` — ``istio-waypoint`` Gateways, ``istio.io/use-waypoint`` / ``waypoint-for`` binding;
* :mod:`.authorization`, :mod:`.peerauth` — ztunnel's L4 Authorizations (L7 fails closed);
* :mod:`.routes`, :mod:`.clusters`, :mod:`.l7policies` — the waypoint view's routes, clusters, L7 policy;
* :mod:`waypoint.pushed` — :class:`WaypointView`, the pushed ``waypoint`` resource (the waypoint owns its type);
* :mod:`.attachment` — warnings for L7 config no waypoint enforces; :mod:`.snapshot` — the orchestration.
"""

from istiod_lite.translate.inputs import PodInfo, pods_from_deployments
from istiod_lite.translate.snapshot import MeshSnapshot, translate, translate_to_push
from istiod_lite.translate.vips import VipAllocator
from waypoint.pushed import WaypointView

__all__ = [
    "MeshSnapshot",
    "PodInfo",
    "VipAllocator",
    "WaypointView",
    "pods_from_deployments",
    "translate",
    "translate_to_push",
]
