"""Translation with Istio's ambient rules: user resources + pods → workloads, services, L4
authorization for ztunnels, and one view per waypoint (routes, clusters, L7 policy).

Entry points: :func:`translate` (→ :class:`MeshSnapshot`) and :func:`translate_to_push` (the
control-plane server's seam). Each module holds one rule set and names its Istio source.
"""

from istiod_lite.translate.inputs import PodInfo
from istiod_lite.translate.snapshot import MeshSnapshot, translate, translate_to_push
from istiod_lite.translate.view import WaypointView
from istiod_lite.translate.vips import VipAllocator

__all__ = ["MeshSnapshot", "PodInfo", "VipAllocator", "WaypointView", "translate", "translate_to_push"]
