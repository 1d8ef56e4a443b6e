"""``networking.istio.io`` VirtualService and DestinationRule, as Istio defines them.

Type names follow Istio's protobuf messages (``HTTPRoute``, ``HTTPMatchRequest``, ``Destination`` …)
so an Istio engineer finds them by the names in Istio's reference. ``v1``, ``v1beta1`` and
``v1alpha3`` are the same schema; ``v1`` is what this mesh writes.

The ``check_*`` functions hold Istio's cross-field rules that a schema cannot express; they run on
already structured objects and return problems with field paths.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Mapping
from typing import ClassVar

import attrs

from schemas.common import Duration, ObjectMeta, Percent, meta
from schemas.errors import MapKey, PathPart, Problem

GROUP = "networking.istio.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1", f"{GROUP}/v1alpha3")
PORT = meta(minimum=1, maximum=65535)
SUBSET_NAME = r"^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$"


@attrs.frozen(kw_only=True)
class StringMatch:
    """Istio's string match: at most one of exact, prefix or regex (RE2 syntax)."""

    ONE_OF: ClassVar[tuple[str, ...]] = ("exact", "prefix", "regex")

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


@attrs.frozen(kw_only=True)
class PortSelector:
    number: int = attrs.field(metadata=PORT)


@attrs.frozen(kw_only=True)
class Destination:
    """A service (``host``, short names resolved in the VirtualService's namespace) and its subset."""

    host: str
    subset: str | None = None
    port: PortSelector | None = None


@attrs.frozen(kw_only=True)
class HeaderOperations:
    set: Mapping[str, str] = attrs.field(factory=dict)
    add: Mapping[str, str] = attrs.field(factory=dict)
    remove: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Headers:
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


@attrs.frozen(kw_only=True)
class HTTPMatchRequest:
    """All conditions of one match must hold; the route's matches are ORed."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: Mapping[str, StringMatch] = attrs.field(factory=dict)
    port: int | None = attrs.field(default=None, metadata=PORT)
    source_labels: Mapping[str, str] = attrs.field(factory=dict)
    query_params: Mapping[str, StringMatch] = attrs.field(factory=dict)
    without_headers: Mapping[str, StringMatch] = attrs.field(factory=dict)
    ignore_uri_case: bool = False
    source_namespace: str | None = None


@attrs.frozen(kw_only=True)
class HTTPRouteDestination:
    destination: Destination
    weight: int | None = attrs.field(default=None, metadata=meta(minimum=0, maximum=100))
    headers: Headers | None = None


@attrs.frozen(kw_only=True)
class HTTPRedirect:
    uri: str | None = None
    authority: str | None = None
    port: int | None = attrs.field(default=None, metadata=PORT)
    scheme: str | None = None
    redirect_code: int | None = attrs.field(default=None, metadata=meta(minimum=300, maximum=399))


@attrs.frozen(kw_only=True)
class HTTPRewrite:
    uri: str | None = None
    authority: str | None = None


@attrs.frozen(kw_only=True)
class HTTPRetry:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "retryRemoteLocalities": "locality-aware retries are not implemented",
        "backoff": "a custom retry backoff is not implemented (25 ms base with jitter is used)",
    }

    attempts: int = attrs.field(default=0, metadata=meta(minimum=0))
    per_try_timeout: Duration | None = None
    retry_on: str | None = None


@attrs.frozen(kw_only=True)
class Delay:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "percent": "deprecated in Istio; use percentage: {value: N}",
        "exponentialDelay": "exponential delays are not implemented; use fixedDelay",
    }

    percentage: Percent | None = None
    fixed_delay: Duration


@attrs.frozen(kw_only=True)
class Abort:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "grpcStatus": "gRPC aborts are not implemented; use httpStatus",
        "http2Error": "HTTP/2 error aborts are not implemented; use httpStatus",
    }

    percentage: Percent | None = None
    http_status: int = attrs.field(metadata=meta(minimum=200, maximum=599))


@attrs.frozen(kw_only=True)
class HTTPFaultInjection:
    delay: Delay | None = None
    abort: Abort | None = None


@attrs.frozen(kw_only=True)
class HTTPRoute:
    """One ``spec.http[]`` entry: the first route whose matches fit a request handles it."""

    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "corsPolicy": "CORS is not implemented by the waypoint",
        "delegate": "VirtualService delegation is not implemented",
        "directResponse": "direct responses are not implemented",
    }

    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    headers: Headers | None = None


@attrs.frozen(kw_only=True)
class L4MatchAttributes:
    destination_subnets: tuple[str, ...] = ()
    port: int | None = attrs.field(default=None, metadata=PORT)
    source_labels: Mapping[str, str] = attrs.field(factory=dict)
    source_namespace: str | None = None


@attrs.frozen(kw_only=True)
class RouteDestination:
    destination: Destination
    weight: int | None = attrs.field(default=None, metadata=meta(minimum=0, maximum=100))


@attrs.frozen(kw_only=True)
class TCPRoute:
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@attrs.frozen(kw_only=True)
class VirtualServiceSpec:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {"tls": "TLS (SNI) routes are not implemented"}

    hosts: tuple[str, ...] = attrs.field(metadata=meta(min_items=1))
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class VirtualService:
    KIND: ClassVar[str] = "VirtualService"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="VirtualService", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: VirtualServiceSpec


# -------------------------------------------------------------------------------- DestinationRule


class SimpleLB(enum.StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    LEAST_CONN = "LEAST_CONN"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"


@attrs.frozen(kw_only=True)
class HTTPCookie:
    name: str
    path: str | None = None
    ttl: Duration | None = None


@attrs.frozen(kw_only=True)
class ConsistentHashLB:
    ONE_OF: ClassVar[tuple[str, ...]] = (
        "httpHeaderName",
        "httpCookie",
        "useSourceIp",
        "httpQueryParameterName",
    )
    ONE_OF_REQUIRED: ClassVar[bool] = True

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None


@attrs.frozen(kw_only=True)
class LoadBalancerSettings:
    ONE_OF: ClassVar[tuple[str, ...]] = ("simple", "consistentHash")

    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None


@attrs.frozen(kw_only=True)
class TCPSettings:
    max_connections: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    connect_timeout: Duration | None = None


@attrs.frozen(kw_only=True)
class HTTPSettings:
    http1_max_pending_requests: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    http2_max_requests: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    max_requests_per_connection: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    max_retries: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    idle_timeout: Duration | None = None


@attrs.frozen(kw_only=True)
class ConnectionPoolSettings:
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


@attrs.frozen(kw_only=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    consecutive_gateway_errors: int | None = attrs.field(default=None, metadata=meta(minimum=0))
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = attrs.field(default=None, metadata=meta(minimum=0, maximum=100))


class TLSMode(enum.StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@attrs.frozen(kw_only=True)
class ClientTLSSettings:
    """Accepted because Istio's examples set ``ISTIO_MUTUAL``; in ambient mode HBONE already is mTLS."""

    mode: TLSMode = TLSMode.ISTIO_MUTUAL


@attrs.frozen(kw_only=True)
class TrafficPolicy:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "portLevelSettings": "per-port traffic policies are not implemented; use one policy per host",
        "tunnel": "Istio's tunnel settings do not apply: ambient traffic always rides HBONE",
        "proxyProtocol": "PROXY protocol is not implemented",
    }

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


@attrs.frozen(kw_only=True)
class Subset:
    name: str = attrs.field(
        metadata=meta(
            pattern=SUBSET_NAME, pattern_text="a valid subset name (letters, digits, '-', '_', '.')"
        )
    )
    labels: Mapping[str, str] = attrs.field(factory=dict)
    traffic_policy: TrafficPolicy | None = None


@attrs.frozen(kw_only=True)
class DestinationRuleSpec:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "workloadSelector": "sidecar-scoped DestinationRules do not exist in ambient mode",
    }

    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class DestinationRule:
    KIND: ClassVar[str] = "DestinationRule"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="DestinationRule", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: DestinationRuleSpec


# ------------------------------------------------------------------------------------------ rules


def _weights(
    route: tuple[HTTPRouteDestination, ...] | tuple[RouteDestination, ...], at: tuple[PathPart, ...]
) -> list[Problem]:
    """Istio's rule: one destination without a weight takes 100; otherwise the weights sum to 100."""
    if not route or (len(route) == 1 and route[0].weight is None):
        return []
    total = sum(d.weight or 0 for d in route)
    if total == 100:
        return []
    weights = " + ".join(str(d.weight or 0) for d in route)
    return [
        Problem(path=(*at, "route"), message=f"destination weights must sum to 100, got {weights} = {total}")
    ]


def _regex_problems(match: StringMatch | None, at: tuple[PathPart | MapKey, ...]) -> list[Problem]:
    if match is None or match.regex is None:
        return []
    try:
        re.compile(match.regex)
    except re.error as exc:
        return [Problem(path=(*at, "regex"), message=f"invalid regular expression: {exc}")]
    return []


def _match_problems(match: HTTPMatchRequest, at: tuple[PathPart, ...]) -> list[Problem]:
    out: list[Problem] = []
    for name in ("uri", "scheme", "method", "authority"):
        out += _regex_problems(getattr(match, name), (*at, name))
    for field in ("headers", "queryParams", "withoutHeaders"):
        table = {
            "headers": match.headers,
            "queryParams": match.query_params,
            "withoutHeaders": match.without_headers,
        }
        for key, value in table[field].items():
            out += _regex_problems(value, (*at, field, MapKey(key)))
    return out


def check_virtual_service(vs: VirtualService) -> list[Problem]:
    out: list[Problem] = []
    for i, http in enumerate(vs.spec.http):
        at: tuple[PathPart, ...] = ("spec", "http", i)
        if not http.route and http.redirect is None:
            out.append(Problem(path=at, message="an HTTP route needs a route or a redirect"))
        if http.route and http.redirect is not None:
            out.append(Problem(path=at, message="an HTTP route cannot have both route and redirect"))
        if http.rewrite is not None and http.redirect is not None:
            out.append(Problem(path=at, message="an HTTP route cannot have both rewrite and redirect"))
        if http.mirror_percentage is not None and http.mirror is None:
            out.append(
                Problem(path=(*at, "mirrorPercentage"), message="mirrorPercentage needs a mirror destination")
            )
        if http.fault is not None and http.fault.delay is None and http.fault.abort is None:
            out.append(Problem(path=(*at, "fault"), message="a fault needs a delay or an abort"))
        out += _weights(http.route, at)
        for j, match in enumerate(http.match):
            out += _match_problems(match, (*at, "match", j))
    for i, tcp in enumerate(vs.spec.tcp):
        at = ("spec", "tcp", i)
        if not tcp.route:
            out.append(Problem(path=(*at, "route"), message="a TCP route needs at least one destination"))
        out += _weights(tcp.route, at)
    return out


def check_destination_rule(dr: DestinationRule) -> list[Problem]:
    counts = Counter(s.name for s in dr.spec.subsets)
    out: list[Problem] = []
    seen: set[str] = set()
    for i, subset in enumerate(dr.spec.subsets):
        if counts[subset.name] > 1 and subset.name in seen:
            message = f'duplicate subset name "{subset.name}" (names must be unique within a DestinationRule)'
            out.append(Problem(path=("spec", "subsets", i, "name"), message=message))
        seen.add(subset.name)
    return out


def subset_names(dr: DestinationRule) -> frozenset[str]:
    return frozenset(s.name for s in dr.spec.subsets)
