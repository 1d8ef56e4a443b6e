"""INTERIM translation, used only until ``istiod_lite.translate`` lands — delete it then.

It exists so the control-plane process (stores → translate → push, CA node authorization) can run and
be tested end to end today. It implements just enough, and none of Istio's rules beyond it:

* core ``Service`` → pushed ``Service`` (``clusterIP`` as the VIP, else a stable address in
  240.240.0.0/16 derived from the name; numeric ``targetPort`` only);
* every pod of the runner's inventory (``<state>/pods.json``) → one pushed ``Workload`` with its address
  and node; without an inventory, one address-less ``Workload`` per ``Deployment`` replica on
  ``spec.template.spec.nodeName``; endpoints of every Service whose selector matches.

No enrollment, waypoints, authorization policies or routes. Do not extend this: extend the real one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from istiod_lite.pod_inventory import Pod
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


def _pods_from_deployments(resources: Sequence[Any]) -> list[Pod]:
    """Without a runner's inventory: ``replicas`` address-less pods on the template's ``nodeName``."""
    pods = []
    for deployment in resources:
        if not isinstance(deployment, core.Deployment):
            continue
        template = deployment.spec.template
        for index in range(deployment.spec.replicas):
            pods.append(
                Pod(
                    name=f"{deployment.metadata.name}-{index}",
                    namespace=_namespace(deployment),
                    ip=None,
                    node=template.spec.node_name or "",
                    labels=dict(template.metadata.labels),
                    service_account=template.spec.service_account_name or "default",
                    deployment=deployment.metadata.name,
                )
            )
    return pods


def _workload(pod: Pod, services: Sequence[core.Service]) -> Workload:
    endpoints = {
        f"{pod.namespace}/{svc.metadata.name}.{pod.namespace}.svc.cluster.local": {
            port.port: port.target_port if isinstance(port.target_port, int) else port.port for port in svc.spec.ports
        }
        for svc in services
        if _namespace(svc) == pod.namespace
        and svc.spec.selector
        and all(pod.labels.get(k) == v for k, v in svc.spec.selector.items())
    }
    return Workload(
        uid=f"Kubernetes//Pod/{pod.namespace}/{pod.name}",
        name=pod.name,
        namespace=pod.namespace,
        addresses=(pod.ip,) if pod.ip else (),
        service_account=pod.service_account,
        node=pod.node,
        workload_name=pod.deployment or pod.name,
        canonical_name=pod.labels.get("app", pod.deployment or pod.name),
        services=endpoints,
    )


def interim_translate(resources: Sequence[Any], pods: Sequence[Pod] | None = None) -> Mapping[str, Mapping[str, JSON]]:
    """Typed user resources (+ the runner's pods) → ``{"workload", "service", "authorization": {}}``."""
    services = [r for r in resources if isinstance(r, core.Service)]
    pushed_services = [_service(s) for s in services]
    placed = _pods_from_deployments(resources) if pods is None else pods
    workloads = [_workload(pod, services) for pod in placed]
    return {
        "workload": {resource_key(w): to_json(w) for w in workloads},
        "service": {resource_key(s): to_json(s) for s in pushed_services},
        "authorization": {},
    }
