"""DestinationRule → :class:`~waypoint.model.ClusterPolicy`, and each cluster's endpoints.

* Which DestinationRule applies to a host: one whose ``host`` (short names resolved in the rule's own
  namespace) equals it — preferring a rule in the waypoint's namespace, then the service's, then
  the root namespace (Istio's lookup order for a proxy) — else the most specific ``*.suffix`` rule.
* ``trafficPolicy``: ``loadBalancer``, ``connectionPool`` and ``outlierDetection``; a subset's own
  ``trafficPolicy`` replaces each of those parts it sets (Istio merges per field). Istio's default
  balancer is LEAST_REQUEST; ``LEAST_CONN`` is its old name; ``PASSTHROUGH`` has no waypoint meaning
  and falls back to the default (reported). ``consecutive5xxErrors: 0`` disables that detector.
* Endpoints of ``outbound|port|subset|host``: the workloads behind the service on that port (their
  own target port), narrowed to the subset's labels. A subset no DestinationRule defines has no
  endpoints — the waypoint answers 503, as Istio does — and is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from istiod_lite.translate.inputs import Inventory, PodInfo, labels_match, resolve_host
from istiod_lite.translate.services import EndpointIndex
from meshcore.errors import MeshError
from schemas import core, networking
from schemas.common import namespace_of
from waypoint import model
from waypoint.model import ClusterKey, ClusterPolicy, Endpoint

_SIMPLE = {
    networking.SimpleLB.ROUND_ROBIN: model.LbAlgorithm.ROUND_ROBIN,
    networking.SimpleLB.LEAST_REQUEST: model.LbAlgorithm.LEAST_REQUEST,
    networking.SimpleLB.LEAST_CONN: model.LbAlgorithm.LEAST_REQUEST,
    networking.SimpleLB.RANDOM: model.LbAlgorithm.RANDOM,
}
DEFAULT_POLICY = ClusterPolicy(lb=model.LbAlgorithm.LEAST_REQUEST)


def destination_rule_for(
    inventory: Inventory, hostname: str, *, service_namespace: str | None, proxy_namespace: str
) -> networking.DestinationRule | None:
    exact: dict[str, networking.DestinationRule] = {}
    wildcard: list[tuple[int, networking.DestinationRule]] = []
    for dr in inventory.destination_rules:
        namespace = namespace_of(dr.metadata)
        host = resolve_host(dr.spec.host, namespace, inventory.cluster_domain)
        if host == hostname:
            exact.setdefault(namespace, dr)
        elif host.startswith("*") and hostname.endswith(host[1:]):
            wildcard.append((len(host), dr))
    for preferred in (proxy_namespace, service_namespace, inventory.root_namespace):
        if preferred is not None and preferred in exact:
            return exact[preferred]
    if exact:
        return next(iter(exact.values()))
    if wildcard:
        return max(wildcard, key=lambda item: item[0])[1]
    return None


def _merge(
    base: networking.TrafficPolicy | None, override: networking.TrafficPolicy | None
) -> networking.TrafficPolicy | None:
    if override is None:
        return base
    if base is None:
        return override
    return networking.TrafficPolicy(
        load_balancer=override.load_balancer or base.load_balancer,
        connection_pool=override.connection_pool or base.connection_pool,
        outlier_detection=override.outlier_detection or base.outlier_detection,
        tls=override.tls or base.tls,
    )


def _consistent_hash(lb: networking.ConsistentHashLB) -> model.ConsistentHash:
    return model.ConsistentHash(
        header=lb.http_header_name,
        cookie=lb.http_cookie.name if lb.http_cookie is not None else None,
        use_source_ip=bool(lb.use_source_ip),
        query_parameter=lb.http_query_parameter_name,
    )


def cluster_policy(policy: networking.TrafficPolicy | None, where: str, warnings: list[str]) -> ClusterPolicy:
    try:
        return _cluster_policy(policy, where, warnings)
    except MeshError as exc:
        warnings.append(f"{where}: {exc.message}; Istio's default cluster policy is used instead")
        return DEFAULT_POLICY


def _cluster_policy(policy: networking.TrafficPolicy | None, where: str, warnings: list[str]) -> ClusterPolicy:
    if policy is None:
        return DEFAULT_POLICY
    lb = DEFAULT_POLICY.lb
    consistent = None
    if policy.load_balancer is not None:
        if policy.load_balancer.consistent_hash is not None:
            lb, consistent = model.LbAlgorithm.RING_HASH, _consistent_hash(policy.load_balancer.consistent_hash)
        elif policy.load_balancer.simple is not None:
            simple = policy.load_balancer.simple
            if simple is networking.SimpleLB.PASSTHROUGH:
                warnings.append(f"{where}: loadBalancer PASSTHROUGH has no meaning at a waypoint; using LEAST_REQUEST")
            lb = _SIMPLE.get(simple, DEFAULT_POLICY.lb)
    pool = model.ConnectionPoolSettings()
    if policy.connection_pool is not None:
        tcp, http = policy.connection_pool.tcp, policy.connection_pool.http
        connect = tcp.connect_timeout.seconds if tcp is not None and tcp.connect_timeout is not None else 10.0
        pool = model.ConnectionPoolSettings(
            max_connections=tcp.max_connections if tcp is not None else None,
            http1_max_pending_requests=http.http1_max_pending_requests if http is not None else None,
            http2_max_requests=http.http2_max_requests if http is not None else None,
            max_requests_per_connection=http.max_requests_per_connection if http is not None else None,
            max_retries=http.max_retries if http is not None else None,
            connect_timeout=connect or 10.0,
        )
    outlier = None
    if policy.outlier_detection is not None:
        od = policy.outlier_detection
        defaults = model.OutlierDetection()
        five_xx = od.consecutive_5xx_errors
        gateway = od.consecutive_gateway_errors
        outlier = model.OutlierDetection(
            consecutive_5xx=defaults.consecutive_5xx if five_xx is None else (five_xx or None),
            consecutive_gateway_errors=gateway or None,
            interval=od.interval.seconds if od.interval is not None and od.interval.seconds else defaults.interval,
            base_ejection_time=(
                od.base_ejection_time.seconds
                if od.base_ejection_time is not None and od.base_ejection_time.seconds
                else defaults.base_ejection_time
            ),
            max_ejection_percent=(
                od.max_ejection_percent if od.max_ejection_percent is not None else defaults.max_ejection_percent
            ),
        )
    return ClusterPolicy(lb=lb, consistent_hash=consistent, connection_pool=pool, outlier_detection=outlier)


def subset_of(dr: networking.DestinationRule | None, name: str) -> networking.Subset | None:
    if dr is None:
        return None
    return next((s for s in dr.spec.subsets if s.name == name), None)


def endpoints(
    members: Sequence[tuple[PodInfo, Mapping[int, int]]],
    port: int,
    identities: Mapping[str, str],
    subset_labels: Mapping[str, str] | None,
) -> tuple[Endpoint, ...]:
    """The service's pods (``members``, from the endpoint index) that have an address and a target for
    ``port``, narrowed to ``subset_labels``; ``identities`` maps ``namespace/pod`` to its SPIFFE ID."""
    out = []
    for pod, ports in members:
        target = ports.get(port)
        if not pod.ip or target is None:
            continue
        if subset_labels is not None and not labels_match(subset_labels, pod.labels):
            continue
        out.append(Endpoint(
            address=pod.ip, port=target, identity=identities.get(f"{pod.namespace}/{pod.name}", ""),
            labels=pod.labels))
    return tuple(out)


def build_cluster(
    key: ClusterKey,
    inventory: Inventory,
    services: Mapping[str, core.Service],
    index: EndpointIndex,
    identities: Mapping[str, str],
    proxy_namespace: str,
    warnings: list[str],
) -> tuple[ClusterPolicy, tuple[Endpoint, ...]]:
    service = services.get(key.hostname)
    if service is None:
        warnings.append(f"cluster {key.name}: no Service has hostname {key.hostname}; requests to it get 503")
    service_ns = namespace_of(service.metadata) if service is not None else None
    dr = destination_rule_for(inventory, key.hostname, service_namespace=service_ns, proxy_namespace=proxy_namespace)
    where = f"DestinationRule {namespace_of(dr.metadata)}/{dr.metadata.name}" if dr is not None else key.name
    base = dr.spec.traffic_policy if dr is not None else None
    labels: Mapping[str, str] | None = None
    if key.subset:
        subset = subset_of(dr, key.subset)
        if subset is None:
            warnings.append(
                f"cluster {key.name}: subset {key.subset!r} is not defined by any DestinationRule for "
                f"{key.hostname}; it has no endpoints and requests routed to it get 503"
            )
            return cluster_policy(base, where, warnings), ()
        labels = subset.labels
        base = _merge(base, subset.traffic_policy)
    members = index.members(service) if service is not None else ()
    return cluster_policy(base, where, warnings), endpoints(members, key.port, identities, labels)
