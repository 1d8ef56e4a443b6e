"""Core ``Service`` → pushed ``Service``, and which pods are its endpoints on which ports.

Kubernetes' rules, as Istio reads them: a Service selects pods of its *own* namespace by label
equality (a Service without a selector has no endpoints here — there are no EndpointSlices locally);
``targetPort`` is a number, or the *name* of a container port resolved per pod (pods of one Service
may listen on different numbers), or absent (= the service port). A pod that has no container port of
that name is not an endpoint for that port. The application protocol comes from ``appProtocol``, else
from the port name's prefix (``http-…``, ``grpc-…`` — Istio's explicit protocol selection).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from istiod_lite.translate.inputs import Inventory, PodInfo, labels_match
from schemas import core
from schemas.common import namespace_of
from schemas.discovery import AppProtocol, GatewayAddress, NetworkAddress, Service, ServicePort

_PROTOCOLS = {
    "http": AppProtocol.HTTP11,
    "http2": AppProtocol.HTTP2,
    "h2c": AppProtocol.HTTP2,
    "kubernetes.io/h2c": AppProtocol.HTTP2,
    "grpc": AppProtocol.GRPC,
    "grpc-web": AppProtocol.HTTP11,
    "tcp": AppProtocol.TCP,
    "tls": AppProtocol.TLS,
    "https": AppProtocol.TLS,
    "mongo": AppProtocol.TCP,
    "mysql": AppProtocol.TCP,
    "redis": AppProtocol.TCP,
}


def app_protocol(port: core.ServicePort) -> AppProtocol:
    """``appProtocol`` wins; else the port name up to the first ``-`` (``http-web`` → HTTP/1.1)."""
    if port.app_protocol:
        return _PROTOCOLS.get(port.app_protocol.lower(), AppProtocol.UNKNOWN)
    if port.name:
        return _PROTOCOLS.get(port.name.lower().split("-", 1)[0], AppProtocol.UNKNOWN)
    return AppProtocol.UNKNOWN


def is_headless(service: core.Service) -> bool:
    return service.spec.cluster_ip == "None"


def explicit_vip(service: core.Service) -> str | None:
    ip = service.spec.cluster_ip
    return ip if ip and ip != "None" else None


def target_port(port: core.ServicePort, pod: PodInfo) -> int | None:
    """Where this pod listens for ``port``; None when a named targetPort is not among its container ports."""
    target = port.target_port
    if target is None:
        return port.port
    if isinstance(target, int):
        return target
    return pod.container_ports.get(target)


def static_target_port(port: core.ServicePort) -> int:
    """The target port every endpoint shares; 0 for a named targetPort (each workload's own map decides)."""
    if port.target_port is None:
        return port.port
    return port.target_port if isinstance(port.target_port, int) else 0


def selects(service: core.Service, pod: PodInfo) -> bool:
    return (
        bool(service.spec.selector)
        and namespace_of(service.metadata) == pod.namespace
        and labels_match(service.spec.selector, pod.labels)
    )


def endpoint_ports(service: core.Service, pod: PodInfo) -> dict[int, int]:
    """{service port: target port} for ``pod`` as an endpoint of ``service`` (empty: not an endpoint)."""
    if not selects(service, pod):
        return {}
    out: dict[int, int] = {}
    for port in service.spec.ports:
        target = target_port(port, pod)
        if target is not None:
            out[port.port] = target
    return out


class EndpointIndex:
    """Which pods each Service selects, with their ports — computed once per translation.

    Pods are indexed by ``(namespace, label, value)``, so a Service only looks at the pods carrying
    its first selector label instead of every pod (translation stays near-linear at thousands of
    pods and hundreds of services)."""

    def __init__(self, services: Sequence[core.Service], pods: Sequence[PodInfo]) -> None:
        by_label: dict[tuple[str, str, str], list[PodInfo]] = defaultdict(list)
        for pod in pods:
            for key, value in pod.labels.items():
                by_label[(pod.namespace, key, value)].append(pod)
        self._members: dict[tuple[str, str], tuple[tuple[PodInfo, dict[int, int]], ...]] = {}
        for service in services:
            namespace = namespace_of(service.metadata)
            selector = service.spec.selector
            members: list[tuple[PodInfo, dict[int, int]]] = []
            if selector:
                first_key, first_value = next(iter(selector.items()))
                for pod in by_label.get((namespace, first_key, first_value), ()):
                    ports = endpoint_ports(service, pod)
                    if ports:
                        members.append((pod, ports))
            self._members[(namespace, service.metadata.name)] = tuple(members)

    def members(self, service: core.Service) -> tuple[tuple[PodInfo, dict[int, int]], ...]:
        """(pod, {service port: target port}) for every pod ``service`` selects, in pod order."""
        return self._members.get((namespace_of(service.metadata), service.metadata.name), ())


def to_discovery(
    inventory: Inventory,
    service: core.Service,
    vip: str | None,
    waypoint: GatewayAddress | None,
) -> Service:
    return Service(
        name=service.metadata.name,
        namespace=namespace_of(service.metadata),
        hostname=inventory.hostname(service),
        vips=(NetworkAddress(address=vip),) if vip is not None else (),
        ports=tuple(
            ServicePort(
                service_port=port.port,
                # 0: a named targetPort, decided per endpoint by the workload's own port map
                target_port=port.port
                if port.target_port is None
                else (port.target_port if isinstance(port.target_port, int) else 0),
                app_protocol=app_protocol(port),
            )
            for port in service.spec.ports
        ),
        waypoint=waypoint,
    )


def service_key(inventory: Inventory, service: core.Service) -> str:
    return f"{namespace_of(service.metadata)}/{inventory.hostname(service)}"


def by_hostname(inventory: Inventory, services: tuple[core.Service, ...]) -> Mapping[str, core.Service]:
    return {inventory.hostname(s): s for s in services}
