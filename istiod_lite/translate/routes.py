"""VirtualService and HTTPRoute → the waypoint's :class:`~waypoint.model.RouteTable` per service port.

VirtualService (Istio's rules):

* A VirtualService binds to the services its ``hosts`` name; a short host resolves against the
  rule's *own* namespace (``search-api`` in ``prod`` is ``search-api.prod.svc.cluster.local``), and
  ``*.prod.svc.cluster.local`` binds every service it covers. Only mesh rules count: ``gateways``
  empty or containing ``mesh``. When several bind one host, the first by namespace/name is used and
  the others are reported.
* Destinations may be *other* services (the canary: host ``search-api``, destinations
  ``search-service`` v1/v2) and resolve the same way. A destination without ``port`` uses its
  service's only port, else the port the request came in on.
* ``http[]`` order is kept: the first matching route wins; a host with a VirtualService but no
  matching route answers 404. ``match.port`` limits a route to that port's table.
* Istio's defaults: a single destination without a weight gets 100; an unset ``retries`` means two
  retries on ``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`` and 503;
  an unset fault percentage injects nothing; an unset mirror percentage mirrors everything.

HTTPRoute (Gateway API, GAMMA): a ``parentRef`` to a core Service (optionally one ``port``) binds the
route to that service. Rules of all routes for a service are ordered by the Gateway API's match
precedence (exact path, longest prefix, method, most headers, most query parameters, then route
namespace/name and rule order). ``backendRefs`` weights are proportions; no backend → 500. An
HTTPRoute wins over a VirtualService for the same service (reported). A service bound to neither
gets one default route to itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from istiod_lite.translate.inputs import Inventory, resolve_host
from meshcore.errors import MeshError
from schemas import core, gateway, networking
from schemas.common import namespace_of
from waypoint import model
from waypoint.model import ClusterKey

DEFAULT_RETRY_ATTEMPTS = 2


@attrs.frozen(kw_only=True)
class ServiceRef:
    """What routes need to know about one Service: its hostname and ports."""

    name: str
    namespace: str
    hostname: str
    ports: tuple[int, ...]


# ------------------------------------------------------------------------------- shared conversions


def _string_match(match: networking.StringMatch | None, *, ignore_case: bool = False) -> model.StringMatch:
    if match is None:
        return model.StringMatch.present()
    if match.exact is not None:
        return model.StringMatch.exact(match.exact, ignore_case=ignore_case)
    if match.prefix is not None:
        return model.StringMatch.prefix(match.prefix, ignore_case=ignore_case)
    if match.regex is not None:
        return model.StringMatch(kind=model.MatchKind.REGEX, value=match.regex, ignore_case=ignore_case)
    return model.StringMatch.present()


def _header_ops(ops: networking.HeaderOperations | None) -> model.HeaderOps:
    if ops is None:
        return model.NO_HEADER_OPS
    return model.HeaderOps(set=tuple(ops.set.items()), add=tuple(ops.add.items()), remove=ops.remove)


def _gateway_header_ops(ops: gateway.HTTPHeaderFilter | None) -> model.HeaderOps:
    if ops is None:
        return model.NO_HEADER_OPS
    return model.HeaderOps(
        set=tuple((h.name, h.value) for h in ops.set),
        add=tuple((h.name, h.value) for h in ops.add),
        remove=ops.remove,
    )


def default_retry() -> model.RetryPolicy:
    return model.RetryPolicy.from_istio(DEFAULT_RETRY_ATTEMPTS)


def retry_policy(retries: networking.HTTPRetry | None, where: str, warnings: list[str]) -> model.RetryPolicy | None:
    if retries is None:
        return default_retry()
    if retries.attempts == 0:
        return None
    retry_on = retries.retry_on
    if retry_on is not None:
        known = {c.value for c in model.RetryOn}
        tokens = [t.strip() for t in retry_on.split(",") if t.strip()]
        unknown = [t for t in tokens if not t.isdigit() and t not in known]
        if unknown:
            warnings.append(f"{where}: retryOn condition(s) {', '.join(unknown)} are not implemented and ignored")
        retry_on = ",".join(t for t in tokens if t not in unknown)
    per_try = retries.per_try_timeout.seconds if retries.per_try_timeout is not None else None
    return model.RetryPolicy.from_istio(retries.attempts, retry_on, per_try if per_try else None)


# --------------------------------------------------------------------------------- VirtualService


def host_covers(pattern: str, hostname: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:])
    return pattern == hostname


def virtual_service_for(
    inventory: Inventory, service: ServiceRef, warnings: list[str]
) -> networking.VirtualService | None:
    bound = []
    for vs in inventory.virtual_services:
        if vs.spec.gateways and "mesh" not in vs.spec.gateways:
            continue
        namespace = namespace_of(vs.metadata)
        hosts = [resolve_host(h, namespace, inventory.cluster_domain) for h in vs.spec.hosts]
        if any(host_covers(h, service.hostname) for h in hosts):
            bound.append(vs)
    if len(bound) > 1:
        ignored = ", ".join(f"{namespace_of(v.metadata)}/{v.metadata.name}" for v in bound[1:])
        first = bound[0]
        warnings.append(
            f"several VirtualServices bind {service.hostname}: using {namespace_of(first.metadata)}/"
            f"{first.metadata.name}, ignoring {ignored}"
        )
    return bound[0] if bound else None


def _route_match(match: networking.HTTPMatchRequest) -> model.RouteMatch:
    headers = [model.HeaderMatch(name=k, match=_string_match(v)) for k, v in match.headers.items()]
    headers += [
        model.HeaderMatch(name=k, match=_string_match(v), invert=True) for k, v in match.without_headers.items()
    ]
    return model.RouteMatch(
        uri=_string_match(match.uri, ignore_case=match.ignore_uri_case) if match.uri is not None else None,
        method=_string_match(match.method) if match.method is not None else None,
        authority=_string_match(match.authority) if match.authority is not None else None,
        headers=tuple(headers),
        query_params=tuple(
            model.QueryParamMatch(name=k, match=_string_match(v)) for k, v in match.query_params.items()
        ),
        port=match.port,
        source_labels=match.source_labels,
        source_namespace=match.source_namespace,
    )


def _destination_cluster(
    destination: networking.Destination,
    namespace: str,
    port: int,
    services: Mapping[str, ServiceRef],
    inventory: Inventory,
) -> ClusterKey:
    hostname = resolve_host(destination.host, namespace, inventory.cluster_domain)
    if destination.port is not None:
        dest_port = destination.port.number
    else:
        target = services.get(hostname)
        dest_port = target.ports[0] if target is not None and len(target.ports) == 1 else port
    return ClusterKey(hostname=hostname, port=dest_port, subset=destination.subset or "")


def _fault(fault: networking.HTTPFaultInjection | None) -> model.FaultPolicy | None:
    if fault is None:
        return None
    delay = abort = None
    if fault.delay is not None:
        percent = fault.delay.percentage.value if fault.delay.percentage is not None else 0.0
        delay = model.FaultDelay(fixed_delay=fault.delay.fixed_delay.seconds, percentage=percent)
    if fault.abort is not None:
        percent = fault.abort.percentage.value if fault.abort.percentage is not None else 0.0
        abort = model.FaultAbort(percentage=percent, http_status=fault.abort.http_status)
    return model.FaultPolicy(delay=delay, abort=abort)


def _vs_route(
    vs: networking.VirtualService,
    index: int,
    http: networking.HTTPRoute,
    port: int,
    services: Mapping[str, ServiceRef],
    inventory: Inventory,
    warnings: list[str],
) -> model.Route | None:
    namespace = namespace_of(vs.metadata)
    where = f"VirtualService {namespace}/{vs.metadata.name} http[{index}]"
    matches = [m for m in http.match if m.port is None or m.port == port]
    if http.match and not matches:
        return None  # this route is for other ports
    action: model.RouteAction
    if http.redirect is not None:
        redirect = http.redirect
        action = model.Redirect(
            uri=redirect.uri,
            authority=redirect.authority,
            scheme=redirect.scheme,
            port=redirect.port,
            status=redirect.redirect_code or 301,
        )
    else:
        single = len(http.route) == 1
        destinations = tuple(
            model.WeightedDestination(
                cluster=_destination_cluster(d.destination, namespace, port, services, inventory),
                weight=d.weight if d.weight is not None else (100 if single else 0),
                request_headers=_header_ops(d.headers.request if d.headers else None),
                response_headers=_header_ops(d.headers.response if d.headers else None),
            )
            for d in http.route
        )
        if not destinations or sum(d.weight for d in destinations) <= 0:
            warnings.append(f"{where}: no destination with a weight; requests get 500")
            action = model.DirectResponse(status=500)
        else:
            action = model.WeightedDestinations(destinations=destinations)
    mirrors: tuple[model.Mirror, ...] = ()
    if http.mirror is not None:
        percent = http.mirror_percentage.value if http.mirror_percentage is not None else 100.0
        mirrors = (
            model.Mirror(
                cluster=_destination_cluster(http.mirror, namespace, port, services, inventory), percentage=percent
            ),
        )
    rewrite = None
    if http.rewrite is not None and (http.rewrite.uri is not None or http.rewrite.authority is not None):
        rewrite = model.Rewrite(uri=http.rewrite.uri, authority=http.rewrite.authority)
    timeout = http.timeout.seconds if http.timeout is not None else None
    return model.Route(
        name=http.name or f"{namespace}/{vs.metadata.name}/{index}",
        action=action,
        matches=tuple(_route_match(m) for m in matches),
        rewrite=rewrite,
        request_headers=_header_ops(http.headers.request if http.headers else None),
        response_headers=_header_ops(http.headers.response if http.headers else None),
        mirrors=mirrors,
        timeout=timeout if timeout else None,
        retry=retry_policy(http.retries, where, warnings),
        fault=_fault(http.fault),
    )


def virtual_service_routes(
    vs: networking.VirtualService,
    port: int,
    services: Mapping[str, ServiceRef],
    inventory: Inventory,
    warnings: list[str],
) -> tuple[model.Route, ...]:
    if vs.spec.tcp:
        warnings.append(
            f"VirtualService {namespace_of(vs.metadata)}/{vs.metadata.name}: tcp routes are not applied "
            "by the waypoint (HTTP routes only)"
        )
    out = []
    for index, http in enumerate(vs.spec.http):
        try:
            converted = _vs_route(vs, index, http, port, services, inventory, warnings)
        except MeshError as exc:  # e.g. a redirect code the waypoint does not send
            where = f"VirtualService {namespace_of(vs.metadata)}/{vs.metadata.name} http[{index}]"
            warnings.append(f"{where}: {exc.message}; the route is left out")
            continue
        if converted is not None:
            out.append(converted)
    return tuple(out)


# ---------------------------------------------------------------------------------------- HTTPRoute


def http_routes_for(inventory: Inventory, service: ServiceRef, port: int) -> list[gateway.HTTPRoute]:
    out = []
    for route in inventory.http_routes:
        namespace = namespace_of(route.metadata)
        for ref in route.spec.parent_refs:
            if (
                gateway.is_service_parent(ref)
                and ref.name == service.name
                and (ref.namespace or namespace) == service.namespace
                and (ref.port is None or ref.port == port)
            ):
                out.append(route)
                break
    return out


def _path_match(path: gateway.HTTPPathMatch | None) -> model.StringMatch | None:
    if path is None:
        return model.StringMatch(kind=model.MatchKind.PATH_SEPARATED_PREFIX, value="/")
    if path.type is gateway.PathMatchType.EXACT:
        return model.StringMatch.exact(path.value)
    if path.type is gateway.PathMatchType.REGULAR_EXPRESSION:
        return model.StringMatch.regex(path.value)
    return model.StringMatch(kind=model.MatchKind.PATH_SEPARATED_PREFIX, value=path.value)


def _gw_value_match(kind: gateway.MatchType, value: str) -> model.StringMatch:
    if kind is gateway.MatchType.REGULAR_EXPRESSION:
        return model.StringMatch.regex(value)
    return model.StringMatch.exact(value)


def _gw_match(match: gateway.HTTPRouteMatch) -> model.RouteMatch:
    return model.RouteMatch(
        uri=_path_match(match.path),
        method=model.StringMatch.exact(match.method.value) if match.method is not None else None,
        headers=tuple(model.HeaderMatch(name=h.name, match=_gw_value_match(h.type, h.value)) for h in match.headers),
        query_params=tuple(
            model.QueryParamMatch(name=q.name, match=_gw_value_match(q.type, q.value)) for q in match.query_params
        ),
    )


def _precedence(match: gateway.HTTPRouteMatch) -> tuple[int, int, int, int, int]:
    """Gateway API order: exact path, then longer prefix, method, more headers, more query params."""
    path = match.path or gateway.HTTPPathMatch()
    exact = 1 if path.type is gateway.PathMatchType.EXACT else 0
    return (-exact, -len(path.value), -(match.method is not None), -len(match.headers), -len(match.query_params))


def _backend_cluster(
    ref: gateway.HTTPBackendRef | gateway.BackendObjectReference,
    namespace: str,
    port: int,
    inventory: Inventory,
    where: str,
    warnings: list[str],
) -> ClusterKey:
    if (ref.kind or "Service") != "Service" or (ref.group or "") != "":
        warnings.append(f"{where}: backend kind {ref.kind} is not supported; requests to it get 503")
    hostname = resolve_host(ref.name, ref.namespace or namespace, inventory.cluster_domain)
    if ref.port is None:
        warnings.append(f"{where}: a Service backendRef needs a port; using the request's port {port}")
    return ClusterKey(hostname=hostname, port=ref.port or port)


def _rule_route(
    route: gateway.HTTPRoute,
    index: int,
    rule: gateway.HTTPRouteRule,
    matches: Sequence[gateway.HTTPRouteMatch],
    port: int,
    inventory: Inventory,
    warnings: list[str],
) -> model.Route:
    namespace = namespace_of(route.metadata)
    where = f"HTTPRoute {namespace}/{route.metadata.name} rules[{index}]"
    request_headers = response_headers = model.NO_HEADER_OPS
    redirect: model.Redirect | None = None
    rewrite: model.Rewrite | None = None
    mirrors: list[model.Mirror] = []
    for f in rule.filters:
        if f.request_header_modifier is not None:
            request_headers = _gateway_header_ops(f.request_header_modifier)
        elif f.response_header_modifier is not None:
            response_headers = _gateway_header_ops(f.response_header_modifier)
        elif f.request_redirect is not None:
            r = f.request_redirect
            uri = None
            if r.path is not None:
                if r.path.type is gateway.PathModifierType.REPLACE_FULL_PATH:
                    uri = r.path.replace_full_path
                else:
                    warnings.append(f"{where}: RequestRedirect ReplacePrefixMatch is not implemented; path kept")
            redirect = model.Redirect(
                uri=uri, authority=r.hostname, scheme=r.scheme, port=r.port, status=r.status_code or 302
            )
        elif f.url_rewrite is not None:
            u = f.url_rewrite
            uri = None
            uri_regex = None
            if u.path is not None and u.path.type is gateway.PathModifierType.REPLACE_FULL_PATH:
                uri_regex = ("^.*$", (u.path.replace_full_path or "/").replace("\\", "\\\\"))
            elif u.path is not None:
                uri = u.path.replace_prefix_match or "/"
            rewrite = model.Rewrite(uri=uri, uri_regex=uri_regex, authority=u.hostname)
        elif f.request_mirror is not None:
            mirrors.append(
                model.Mirror(
                    cluster=_backend_cluster(f.request_mirror.backend_ref, namespace, port, inventory, where, warnings)
                )
            )
    action: model.RouteAction
    if redirect is not None:
        action = redirect
    else:
        destinations = tuple(
            model.WeightedDestination(
                cluster=_backend_cluster(b, namespace, port, inventory, where, warnings), weight=b.weight
            )
            for b in rule.backend_refs
        )
        if not destinations or sum(d.weight for d in destinations) <= 0:
            action = model.DirectResponse(status=500)
        else:
            action = model.WeightedDestinations(destinations=destinations)
    timeouts = rule.timeouts
    timeout = timeouts.request.seconds if timeouts is not None and timeouts.request is not None else None
    retry = default_retry()
    if timeouts is not None and timeouts.backend_request is not None and timeouts.backend_request.seconds:
        retry = attrs.evolve(retry, per_try_timeout=timeouts.backend_request.seconds)
    return model.Route(
        name=rule.name or f"{namespace}/{route.metadata.name}/{index}",
        action=action,
        matches=tuple(_gw_match(m) for m in matches),
        rewrite=rewrite,
        request_headers=request_headers,
        response_headers=response_headers,
        mirrors=tuple(mirrors),
        timeout=timeout if timeout else None,
        retry=retry,
    )


def http_route_routes(
    routes: Sequence[gateway.HTTPRoute], port: int, inventory: Inventory, warnings: list[str]
) -> tuple[model.Route, ...]:
    """One model route per (rule, match), ordered by match precedence (stable: route order, rule order)."""
    entries: list[tuple[tuple[int, ...], model.Route]] = []
    for order, route in enumerate(routes):
        for index, rule in enumerate(route.spec.rules):
            matches = rule.matches or (gateway.HTTPRouteMatch(),)
            for m_index, match in enumerate(matches):
                try:
                    converted = _rule_route(route, index, rule, (match,), port, inventory, warnings)
                except MeshError as exc:  # e.g. a regular expression Python cannot compile
                    where = f"HTTPRoute {namespace_of(route.metadata)}/{route.metadata.name} rules[{index}]"
                    warnings.append(f"{where}: {exc.message}; the rule is left out")
                    continue
                entries.append(((*_precedence(match), order, index, m_index), converted))
    entries.sort(key=lambda entry: entry[0])
    return tuple(route for _, route in entries)


# ------------------------------------------------------------------------------------------ tables


def route_tables(
    inventory: Inventory,
    service: ServiceRef,
    services: Mapping[str, ServiceRef],
    warnings: list[str],
) -> tuple[model.RouteTable, ...]:
    vs = virtual_service_for(inventory, service, warnings)
    tables = []
    for port in service.ports:
        gamma = http_routes_for(inventory, service, port)
        if gamma:
            if vs is not None:
                warnings.append(
                    f"{service.hostname}:{port} has both HTTPRoutes and VirtualService "
                    f"{namespace_of(vs.metadata)}/{vs.metadata.name}; the HTTPRoutes are used"
                )
            routes = http_route_routes(gamma, port, inventory, warnings)
        elif vs is not None:
            routes = virtual_service_routes(vs, port, services, inventory, warnings)
        else:
            default = ClusterKey(hostname=service.hostname, port=port)
            routes = (
                model.Route(name="default", action=model.WeightedDestinations.single(default), retry=default_retry()),
            )
        tables.append(model.RouteTable(hostname=service.hostname, port=port, routes=routes))
    return tuple(tables)


def service_refs(inventory: Inventory, services: Sequence[core.Service]) -> dict[str, ServiceRef]:
    """hostname → :class:`ServiceRef` for every Service."""
    return {
        inventory.hostname(s): ServiceRef(
            name=s.metadata.name,
            namespace=namespace_of(s.metadata),
            hostname=inventory.hostname(s),
            ports=tuple(p.port for p in s.spec.ports),
        )
        for s in services
    }
