"""Which waypoint serves what: Gateways of class ``istio-waypoint`` and ``istio.io/use-waypoint``.

Istio's rules (ambient ``waypoints.go``):

* A waypoint is a Gateway with ``gatewayClassName: istio-waypoint``. Its label ``istio.io/waypoint-for``
  says which traffic it takes: ``service`` (the default), ``workload``, ``all`` or ``none``.
* A Service or a pod names its waypoint with the label ``istio.io/use-waypoint: <gateway name>`` (in
  the object's own namespace unless ``istio.io/use-waypoint-namespace`` says otherwise). An object
  without the label inherits its *namespace's* label; ``none`` on the object opts it out even when
  the namespace names one. A Service's label never applies to the pods behind it (Istio binds
  services and workloads separately): service traffic uses the service's waypoint, traffic sent to a
  pod's own address uses the pod's.
* The binding only holds if the waypoint takes that kind of traffic: a service may only use a
  ``service``/``all`` waypoint, a workload only a ``workload``/``all`` one; otherwise nothing is bound
  (and we say why).
* A waypoint's own pods and its own Service never get a waypoint — they would loop into themselves.

Istio's gateway controller also creates, per waypoint, a Service named like the Gateway (status port
15021, HBONE port 15008) selecting the waypoint's pods; :func:`waypoint_service_resources` makes the
same Service here unless the user wrote one, so the waypoint has a hostname and a VIP like any service.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from istiod_lite.translate.inputs import (
    GATEWAY_NAME,
    USE_WAYPOINT,
    USE_WAYPOINT_NAMESPACE,
    WAYPOINT_CLASS,
    WAYPOINT_FOR,
    Inventory,
    PodInfo,
    service_hostname,
)
from schemas import core
from schemas.common import ObjectMeta, namespace_of
from schemas.discovery import HBONE_PORT, GatewayAddress, NamespacedHostname

GATEWAY_MANAGED = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"
STATUS_PORT = 15021
TRAFFIC_TYPES = ("service", "workload", "all", "none")


@attrs.frozen(kw_only=True)
class Waypoint:
    name: str
    namespace: str
    traffic_type: str
    hostname: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def address(self) -> GatewayAddress:
        """Istio sends the waypoint by hostname, so each client resolves the family it needs."""
        return GatewayAddress(
            hostname=NamespacedHostname(namespace=self.namespace, hostname=self.hostname),
            hbone_mtls_port=HBONE_PORT,
        )

    def takes(self, traffic: str) -> bool:
        return self.traffic_type in (traffic, "all")


def find_waypoints(inventory: Inventory, warnings: list[str]) -> dict[str, Waypoint]:
    found: dict[str, Waypoint] = {}
    for gw in inventory.gateways:
        if gw.spec.gateway_class_name != WAYPOINT_CLASS:
            continue
        namespace = namespace_of(gw.metadata)
        traffic = gw.metadata.labels.get(WAYPOINT_FOR, "service")
        if traffic not in TRAFFIC_TYPES:
            warnings.append(
                f"Gateway {namespace}/{gw.metadata.name}: {WAYPOINT_FOR}={traffic!r} is not one of "
                f"{', '.join(TRAFFIC_TYPES)}; treating it as 'service' (Istio's default)"
            )
            traffic = "service"
        hostname = service_hostname(gw.metadata.name, namespace, inventory.cluster_domain)
        waypoint = Waypoint(name=gw.metadata.name, namespace=namespace, traffic_type=traffic, hostname=hostname)
        found[waypoint.key] = waypoint
    return found


def is_waypoint_pod(pod: PodInfo, waypoints: Mapping[str, Waypoint]) -> bool:
    name = pod.labels.get(GATEWAY_NAME)
    return name is not None and f"{pod.namespace}/{name}" in waypoints


def is_waypoint_service(service: core.Service, waypoints: Mapping[str, Waypoint]) -> bool:
    """Istio's managed label, or a Service the user wrote that selects a waypoint's pods."""
    if service.metadata.labels.get(GATEWAY_MANAGED) == MESH_CONTROLLER:
        return True
    name = service.spec.selector.get(GATEWAY_NAME)
    return name is not None and f"{namespace_of(service.metadata)}/{name}" in waypoints


def _use_waypoint(labels: Mapping[str, str], namespace: str) -> tuple[str | None, bool]:
    """(waypoint key, opted out) from an object's labels; (None, False) when it says nothing."""
    name = labels.get(USE_WAYPOINT)
    if name is None or name == "":
        return None, False
    if name == "none":
        return None, True
    return f"{labels.get(USE_WAYPOINT_NAMESPACE, namespace)}/{name}", False


def _bind(
    inventory: Inventory,
    waypoints: Mapping[str, Waypoint],
    labels: Mapping[str, str],
    namespace: str,
    what: str,
    traffic: str,
    warnings: list[str],
) -> Waypoint | None:
    key, opted_out = _use_waypoint(labels, namespace)
    if opted_out:
        return None
    if key is None:
        key, _ = _use_waypoint(inventory.namespace_labels(namespace), namespace)
    if key is None:
        return None
    waypoint = waypoints.get(key)
    if waypoint is None:
        warnings.append(
            f"{what} uses waypoint {key}, but no Gateway of class {WAYPOINT_CLASS} {key} exists; "
            "its traffic is not sent to a waypoint"
        )
        return None
    if not waypoint.takes(traffic):
        warnings.append(
            f"{what} uses waypoint {key}, which is for {waypoint.traffic_type!r} traffic, not {traffic!r} "
            f"(set {WAYPOINT_FOR}: {traffic} or all on the Gateway); no waypoint is bound"
        )
        return None
    return waypoint


def waypoint_for_service(
    inventory: Inventory, waypoints: Mapping[str, Waypoint], service: core.Service, warnings: list[str]
) -> Waypoint | None:
    if is_waypoint_service(service, waypoints):
        return None
    namespace = namespace_of(service.metadata)
    what = f"Service {namespace}/{service.metadata.name}"
    return _bind(inventory, waypoints, service.metadata.labels, namespace, what, "service", warnings)


def waypoint_for_pod(
    inventory: Inventory, waypoints: Mapping[str, Waypoint], pod: PodInfo, warnings: list[str]
) -> Waypoint | None:
    if is_waypoint_pod(pod, waypoints):
        return None
    what = f"pod {pod.namespace}/{pod.name}"
    return _bind(inventory, waypoints, pod.labels, pod.namespace, what, "workload", warnings)


def waypoint_service_resources(inventory: Inventory, waypoints: Mapping[str, Waypoint]) -> list[core.Service]:
    """The Services Istio's gateway controller would create for waypoints the user gave none for."""
    existing = {(namespace_of(s.metadata), s.metadata.name) for s in inventory.services}
    out = []
    for waypoint in waypoints.values():
        if (waypoint.namespace, waypoint.name) in existing:
            continue
        out.append(
            core.Service(
                metadata=ObjectMeta(
                    name=waypoint.name,
                    namespace=waypoint.namespace,
                    labels={GATEWAY_MANAGED: MESH_CONTROLLER, GATEWAY_NAME: waypoint.name},
                ),
                spec=core.ServiceSpec(
                    selector={GATEWAY_NAME: waypoint.name},
                    ports=(
                        core.ServicePort(name="status-port", port=STATUS_PORT, target_port=STATUS_PORT),
                        core.ServicePort(name="mesh", port=HBONE_PORT, target_port=HBONE_PORT),
                    ),
                ),
            )
        )
    return out

