"""What translation reads: typed user resources indexed by kind, plus the pod inventory.

Locally there are no Pod objects — pods are replicas of Deployments that the runner places on nodes
and gives addresses — so the pod inventory is an input of its own (:class:`PodInfo`), given beside the
resources. On Kubernetes a store would build the same records from real Pods. Everything here is
plain data; the index only answers "which X are there", never "what does X mean" (the translation
modules decide that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import attrs

from schemas import core, gateway, networking, security
from schemas.common import namespace_of
from schemas.kinds import Resource

ROOT_NAMESPACE = "istio-system"
CLUSTER_ID = "Kubernetes"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

# Istio's label vocabulary (istio.io/api label package).
DATAPLANE_MODE = "istio.io/dataplane-mode"
USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"
GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
WAYPOINT_CLASS = "istio-waypoint"


@attrs.frozen(kw_only=True)
class PodInfo:
    """One running pod as the runner (or the Kubernetes store) knows it.

    ``ip`` is ``None`` while the pod has no address yet (it is then no endpoint of anything);
    ``container_ports`` maps container port *names* to numbers, which is how a Service's named
    ``targetPort`` is resolved — per pod, as Kubernetes does.
    """

    name: str
    namespace: str
    ip: str | None
    node: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    service_account: str = "default"
    deployment: str = ""
    container_ports: Mapping[str, int] = attrs.field(factory=dict)
    # On Kubernetes: whether the node agent reports the pod's traffic redirected (annotation
    # ``ambient.istio.io/redirection: enabled``). An enrolled pod is HBONE only once it is — until then
    # peers must reach it in plain TCP. None where no node agent reports (the local runner).
    redirected: bool | None = None


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality selection on every selector key (an empty selector selects everything)."""
    return all(labels.get(key) == value for key, value in selector.items())


def service_hostname(name: str, namespace: str, domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def resolve_host(host: str, namespace: str, domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """Istio's short names: ``reviews`` written in namespace ``prod`` is ``reviews.prod.svc.<domain>``;
    ``reviews.prod`` is ``reviews.prod.svc.<domain>``; anything longer is taken as written."""
    if "*" in host:
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return service_hostname(host, namespace, domain)
    if len(parts) == 2:
        return f"{host}.svc.{domain}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain}"
    return host


def pods_from_deployments(resources: Iterable[Resource]) -> list[PodInfo]:
    """A provisional inventory for when no runner reports pods: ``replicas`` pods named
    ``<deployment>-<i>`` on the template's ``nodeName``, without addresses (so they are identities
    with a placement, but no endpoints)."""
    pods: list[PodInfo] = []
    for deployment in resources:
        if not isinstance(deployment, core.Deployment):
            continue
        template = deployment.spec.template
        ports = {p.name: p.container_port for c in template.spec.containers for p in c.ports if p.name}
        for index in range(deployment.spec.replicas):
            pods.append(
                PodInfo(
                    name=f"{deployment.metadata.name}-{index}",
                    namespace=namespace_of(deployment.metadata),
                    ip=None,
                    node=template.spec.node_name or "",
                    labels=dict(template.metadata.labels),
                    service_account=template.spec.service_account_name or "default",
                    deployment=deployment.metadata.name,
                    container_ports=ports,
                )
            )
    return pods


T = TypeVar("T", bound=Resource)


def _sorted_of(resources: Sequence[Resource], kind: type[T]) -> tuple[T, ...]:
    found = [r for r in resources if isinstance(r, kind)]
    return tuple(sorted(found, key=lambda r: (namespace_of(r.metadata), r.metadata.name)))


@attrs.frozen(kw_only=True)
class Inventory:
    """The resources by kind, sorted by (namespace, name) so every walk is deterministic."""

    namespaces: Mapping[str, core.Namespace]
    services: tuple[core.Service, ...]
    gateways: tuple[gateway.Gateway, ...]
    http_routes: tuple[gateway.HTTPRoute, ...]
    virtual_services: tuple[networking.VirtualService, ...]
    destination_rules: tuple[networking.DestinationRule, ...]
    authorization_policies: tuple[security.AuthorizationPolicy, ...]
    peer_authentications: tuple[security.PeerAuthentication, ...]
    pods: tuple[PodInfo, ...]
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    root_namespace: str = ROOT_NAMESPACE

    @classmethod
    def build(
        cls,
        resources: Sequence[Resource],
        pods: Sequence[PodInfo],
        *,
        cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
        root_namespace: str = ROOT_NAMESPACE,
    ) -> Inventory:
        namespaces = {r.metadata.name: r for r in resources if isinstance(r, core.Namespace)}
        return cls(
            namespaces=namespaces,
            services=_sorted_of(resources, core.Service),
            gateways=_sorted_of(resources, gateway.Gateway),
            http_routes=_sorted_of(resources, gateway.HTTPRoute),
            virtual_services=_sorted_of(resources, networking.VirtualService),
            destination_rules=_sorted_of(resources, networking.DestinationRule),
            authorization_policies=_sorted_of(resources, security.AuthorizationPolicy),
            peer_authentications=_sorted_of(resources, security.PeerAuthentication),
            pods=tuple(sorted(pods, key=lambda p: (p.namespace, p.name))),
            cluster_domain=cluster_domain,
            root_namespace=root_namespace,
        )

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        found = self.namespaces.get(namespace)
        return found.metadata.labels if found is not None else {}

    def hostname(self, service: core.Service) -> str:
        return service_hostname(service.metadata.name, namespace_of(service.metadata), self.cluster_domain)
