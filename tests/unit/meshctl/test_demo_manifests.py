"""The demo's example is ordinary, valid YAML, and istiod_lite's translation makes the intended canary
of it; the interim waypoint bridge turns that into a view the waypoint process accepts."""

from __future__ import annotations

from istiod_lite.translate import PodInfo, translate_to_push
from meshctl.demo import HOST, demo_manifests, virtual_service
from schemas.kinds import Resource
from schemas.load import load_text
from schemas.networking import VirtualService
from waypoint import pushed
from waypoint.control_plane import served_view
from waypoint.model import WeightedDestinations


def load(text: str, *, alone: bool = False) -> list[Resource]:
    """``alone``: a VirtualService without its DestinationRule (subset warnings expected)."""
    result = load_text(text, "demo.yaml")
    assert result.ok, result.errors
    if not alone:
        assert result.warnings == []
    return list(result.resources)


def test_the_example_is_valid_and_holds_the_canary_pieces() -> None:
    kinds = sorted(type(r).__name__ for r in load(demo_manifests(python="python3")))
    assert kinds == [
        "Deployment", "Deployment", "Deployment", "DestinationRule", "Gateway", "Namespace",
        "Service", "ServiceAccount", "ServiceAccount", "VirtualService",
    ]


def test_rollback_virtual_service_replaces_the_canary_one() -> None:
    canary = next(r for r in load(demo_manifests(python="python3")) if isinstance(r, VirtualService))
    (rollback,) = load(virtual_service(100, 0), alone=True)
    assert isinstance(rollback, VirtualService)
    assert (rollback.metadata.name, rollback.metadata.namespace) == (canary.metadata.name, canary.metadata.namespace)
    assert [d.weight for d in rollback.spec.http[0].route] == [100, 0]


def pods() -> list[PodInfo]:
    def pod(name: str, ip: str, labels: dict[str, str], sa: str, deployment: str) -> PodInfo:
        return PodInfo(name=name, namespace="prod", ip=ip, node="node-1", labels=labels, service_account=sa,
                       deployment=deployment, container_ports={"http": 8080})

    return [
        pod("search-service-v1-0", "127.9.1.1", {"app": "search-service", "version": "v1"}, "search-service",
            "search-service-v1"),
        pod("search-service-v2-0", "127.9.1.2", {"app": "search-service", "version": "v2"}, "search-service",
            "search-service-v2"),
        PodInfo(name="waypoint-0", namespace="prod", ip="127.9.1.9", service_account="waypoint",
                labels={"gateway.networking.k8s.io/gateway-name": "waypoint"}, deployment="waypoint"),
    ]


def test_the_pushed_view_becomes_the_waypoint_s_view_with_the_95_5_split() -> None:
    snapshot = translate_to_push(load(demo_manifests(python="python3")), pods())
    translated = pushed.from_json(snapshot["waypoint"]["prod/waypoint"])
    view = served_view(snapshot["waypoint"]["prod/waypoint"], source="test")
    (binding,) = view.services
    assert (binding.hostname, binding.port, binding.app_protocol) == (HOST, 8080, "http")
    assert binding.vips == translated.services[0].vips
    (table,) = view.route_tables
    action = table.routes[0].action
    assert isinstance(action, WeightedDestinations)
    assert [(d.cluster.subset, d.weight) for d in action.destinations] == [("v1", 95), ("v2", 5)]
    endpoints = {c.key.subset: [e.address for e in c.endpoints] for c in view.clusters}
    assert endpoints == {"v1": ["127.9.1.1"], "v2": ["127.9.1.2"]}
    again = served_view(snapshot["waypoint"]["prod/waypoint"], source="test")
    assert view.version == again.version and view.version  # same view, same version: no reload churn
