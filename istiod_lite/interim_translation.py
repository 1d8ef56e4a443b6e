"""INTERIM translation, used only until ``istiod_lite.translate`` lands — delete it then.

It exists so the control-plane process (stores → translate → push, CA node authorization) can run and
be tested end to end today. It implements just enough, and none of Istio's rules beyond it:

* core ``Service`` → pushed ``Service`` (``clusterIP`` as the VIP, else a stable address in
  240.240.0.0/16 derived from the name; numeric ``targetPort`` only);
* ``Deployment`` → one pushed ``Workload`` per replica, on ``spec.template.spec.nodeName`` (no
  address: pod IPs belong to the runner), endpoints of every Service whose selector matches.

No enrollment, waypoints, authorization policies or routes. Do not extend this: extend the real one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from meshcore.push.protocol import JSON
from schemas import core
from schemas.discovery import NetworkAddress, Service, ServicePort, Workload, resource_key, to_json

_VIP_NET = ipaddress.ip_network("240.240.0.0/16")


def _vip(service: core.Service) -> str:
    cluster_ip = service.spec.cluster_ip
    if cluster_ip and cluster_ip != "None":
        return cluster_ip
    digest = hashlib.sha256(f"{_namespace(service)}/{service.metadata.name}".encode()).digest()
    offset = 1 + int.from_bytes(digest[:2]) % (_VIP_NET.num_addresses - 2)
    return str(_VIP_NET.network_address + offset)


def _namespace(resource: Any) -> str:
    return str(resource.metadata.namespace or "default")


def _service(service: core.Service) -> Service:
    namespace = _namespace(service)
    return Service(
        name=service.metadata.name,
        namespace=namespace,
        hostname=f"{service.metadata.name}.{namespace}.svc.cluster.local",
        vips=(NetworkAddress(address=_vip(service)),),
        ports=tuple(
            ServicePort(
                service_port=port.port,
                target_port=port.target_port if isinstance(port.target_port, int) else port.port,
            )
            for port in service.spec.ports
        ),
    )


def _workloads(deployment: core.Deployment, services: Sequence[core.Service]) -> list[Workload]:
    namespace = _namespace(deployment)
    template = deployment.spec.template
    labels = dict(template.metadata.labels)
    endpoints = {
        f"{namespace}/{svc.metadata.name}.{namespace}.svc.cluster.local": {
            port.port: port.target_port if isinstance(port.target_port, int) else port.port for port in svc.spec.ports
        }
        for svc in services
        if _namespace(svc) == namespace
        and svc.spec.selector
        and all(labels.get(k) == v for k, v in svc.spec.selector.items())
    }
    name = deployment.metadata.name
    return [
        Workload(
            uid=f"Kubernetes//Pod/{namespace}/{name}-{index}",
            name=f"{name}-{index}",
            namespace=namespace,
            service_account=template.spec.service_account_name or "default",
            node=template.spec.node_name or "",
            workload_name=name,
            canonical_name=labels.get("app", name),
            services=endpoints,
        )
        for index in range(deployment.spec.replicas)
    ]


def interim_translate(resources: Sequence[Any]) -> Mapping[str, Mapping[str, JSON]]:
    """Typed user resources → ``{"workload": …, "service": …, "authorization": {}}`` (see module doc)."""
    services = [r for r in resources if isinstance(r, core.Service)]
    pushed_services = [_service(s) for s in services]
    workloads = [w for r in resources if isinstance(r, core.Deployment) for w in _workloads(r, services)]
    return {
        "workload": {resource_key(w): to_json(w) for w in workloads},
        "service": {resource_key(s): to_json(s) for s in pushed_services},
        "authorization": {},
    }
