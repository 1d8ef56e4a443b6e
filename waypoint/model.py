"""The waypoint's own configuration, already translated from Istio/Gateway API resources.

The control plane turns ``VirtualService``/``HTTPRoute`` into :class:`RouteTable` s and
``DestinationRule`` into :class:`ClusterPolicy`; the waypoint never reads user YAML itself. The shapes
follow Envoy's route and cluster configuration (which is what Istio translates to), so the cores that
consume them (router, load balancer, outlier detector, breaker, retries, faults) can be checked
against Envoy's documented behaviour one field at a time.

Everything is frozen and validated on construction: a bad regex or an all-zero weight split fails
here, with a hint, instead of surfacing as a strange routing decision under load.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Iterable, Mapping

import attrs

from meshcore.errors import MeshError

Pairs = tuple[tuple[str, str], ...]


class WaypointConfigError(MeshError):
    """A translated waypoint config object is inconsistent (a control-plane or test-fixture bug)."""

    hint = "check the {field} of the translated route/cluster config; the source resource was {source}"

    def __init__(self, message: str, *, field: str, source: str = "unknown") -> None:
        super().__init__(message, field=field, source=source)


def _pairs(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """Labels and similar maps are stored as sorted pairs so config objects stay hashable."""
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in items))


def _lower(value: str) -> str:
    return value.lower()


def _lower_optional(value: str | None) -> str | None:
    return None if value is None else value.lower()


# --------------------------------------------------------------------------------------------- matching


class MatchKind(enum.Enum):
    """Envoy's string matcher kinds (Istio StringMatch exact/prefix/regex plus what Envoy adds)."""

    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"  # full match, like Envoy's safe_regex (RE2); Python's ``re`` is the engine here
    PRESENT = "present"  # header/query parameter present with any value
    PATH_SEPARATED_PREFIX = "path_separated_prefix"  # Gateway API PathPrefix: "/a" matches "/a/b", not "/ab"


@attrs.frozen(kw_only=True)
class StringMatch:
    kind: MatchKind
    value: str = ""
    ignore_case: bool = False

    def __attrs_post_init__(self) -> None:
        if self.kind is MatchKind.REGEX:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise WaypointConfigError(f"invalid regex {self.value!r}: {exc}", field="regex") from exc
        if self.kind is MatchKind.PATH_SEPARATED_PREFIX and not self.value.startswith("/"):
            raise WaypointConfigError(f"path prefix {self.value!r} must start with '/'", field="path prefix")

    @classmethod
    def exact(cls, value: str, *, ignore_case: bool = False) -> StringMatch:
        return cls(kind=MatchKind.EXACT, value=value, ignore_case=ignore_case)

    @classmethod
    def prefix(cls, value: str, *, ignore_case: bool = False) -> StringMatch:
        return cls(kind=MatchKind.PREFIX, value=value, ignore_case=ignore_case)

    @classmethod
    def regex(cls, value: str) -> StringMatch:
        return cls(kind=MatchKind.REGEX, value=value)

    @classmethod
    def present(cls) -> StringMatch:
        return cls(kind=MatchKind.PRESENT)

    def matches(self, candidate: str) -> bool:
        """Does ``candidate`` (a value known to be present) satisfy this matcher?"""
        kind, value = self.kind, self.value
        if kind is MatchKind.PRESENT:
            return True
        if kind is MatchKind.REGEX:
            flags = re.IGNORECASE if self.ignore_case else 0
            return re.fullmatch(value, candidate, flags) is not None
        if self.ignore_case:
            candidate, value = candidate.lower(), value.lower()
        if kind is MatchKind.EXACT:
            return candidate == value
        if kind is MatchKind.PREFIX:
            return candidate.startswith(value)
        if kind is MatchKind.SUFFIX:
            return candidate.endswith(value)
        # PATH_SEPARATED_PREFIX: the prefix must end at a segment boundary; a trailing "/" is ignored.
        stem = value.rstrip("/")
        return candidate == stem or candidate.startswith(stem + "/") or stem == ""


@attrs.frozen(kw_only=True)
class HeaderMatch:
    """A header condition; ``invert`` is Istio's ``withoutHeaders`` (an absent header satisfies it)."""

    name: str = attrs.field(converter=_lower)
    match: StringMatch
    invert: bool = False


@attrs.frozen(kw_only=True)
class QueryParamMatch:
    name: str
    match: StringMatch


@attrs.frozen(kw_only=True)
class RouteMatch:
    """One Istio ``HTTPMatchRequest``: every field that is set must hold (AND).

    ``uri`` exact/regex compare the path without its query string; a plain prefix compares the whole
    ``:path`` as Envoy does. ``ignore_uri_case`` is carried on ``uri.ignore_case``.
    """

    uri: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    port: int | None = None
    source_labels: Pairs = attrs.field(default=(), converter=_pairs)
    source_namespace: str | None = None


# --------------------------------------------------------------------------------------------- actions


@attrs.frozen(kw_only=True)
class ClusterKey:
    """An upstream cluster: a service (hostname + port), optionally narrowed to a DestinationRule subset."""

    hostname: str
    port: int
    subset: str = ""

    @property
    def name(self) -> str:
        """Istio's cluster name, ``outbound|<port>|<subset>|<hostname>``, as /config_dump shows it."""
        return f"outbound|{self.port}|{self.subset}|{self.hostname}"


@attrs.frozen(kw_only=True)
class HeaderOps:
    """Istio ``Headers.HeaderOperations``: applied as remove, then set (overwrite), then add (append)."""

    set: Pairs = ()
    add: Pairs = ()
    remove: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.set or self.add or self.remove)


NO_HEADER_OPS = HeaderOps()


@attrs.frozen(kw_only=True)
class WeightedDestination:
    cluster: ClusterKey
    weight: int
    request_headers: HeaderOps = NO_HEADER_OPS
    response_headers: HeaderOps = NO_HEADER_OPS

    def __attrs_post_init__(self) -> None:
        if self.weight < 0:
            raise WaypointConfigError(
                f"negative weight {self.weight} for {self.cluster.name}", field="weight"
            )


@attrs.frozen(kw_only=True)
class WeightedDestinations:
    """Envoy ``weighted_clusters``: integer weights, picked with ``random % total``."""

    destinations: tuple[WeightedDestination, ...]

    def __attrs_post_init__(self) -> None:
        if not self.destinations:
            raise WaypointConfigError("a forwarding route needs at least one destination", field="route")
        if self.total_weight <= 0:
            raise WaypointConfigError("destination weights sum to zero", field="weight")

    @property
    def total_weight(self) -> int:
        return sum(d.weight for d in self.destinations)

    @classmethod
    def single(cls, cluster: ClusterKey) -> WeightedDestinations:
        return cls(destinations=(WeightedDestination(cluster=cluster, weight=100),))


@attrs.frozen(kw_only=True)
class Redirect:
    """Istio ``HTTPRedirect``: ``uri`` replaces the whole path; the query survives unless it has its own."""

    uri: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None
    status: int = 301
    strip_query: bool = False

    def __attrs_post_init__(self) -> None:
        if self.status not in (301, 302, 303, 307, 308):
            raise WaypointConfigError(f"redirect code {self.status} is not a redirect", field="redirectCode")


@attrs.frozen(kw_only=True)
class DirectResponse:
    status: int
    body: str = ""


RouteAction = WeightedDestinations | Redirect | DirectResponse


@attrs.frozen(kw_only=True)
class Rewrite:
    """Istio ``HTTPRewrite``. ``uri`` replaces the matched prefix (or, for other matches, the whole
    path); ``uri_regex`` is ``uriRegexRewrite`` (pattern, substitution with ``\\1`` groups)."""

    uri: str | None = None
    uri_regex: tuple[str, str] | None = None
    authority: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.uri is not None and self.uri_regex is not None:
            raise WaypointConfigError("rewrite sets both uri and uriRegexRewrite", field="rewrite")
        if self.uri_regex is not None:
            try:
                re.compile(self.uri_regex[0])
            except re.error as exc:
                raise WaypointConfigError(f"invalid rewrite regex: {exc}", field="uriRegexRewrite") from exc


def _percentage(value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 100.0:
        raise WaypointConfigError(f"percentage {value} outside 0..100", field="percentage")
    return value


def sampled(percentage: float, rng: random.Random) -> bool:
    """How a model percentage is drawn: Envoy's runtime fraction with a per-million denominator, which
    is what Istio's double ``percentage.value`` becomes (so 0.0001 % is the finest step)."""
    return rng.randrange(1_000_000) < round(percentage * 10_000)


@attrs.frozen(kw_only=True)
class Mirror:
    cluster: ClusterKey
    percentage: float = attrs.field(default=100.0, converter=_percentage)


class RetryOn(enum.Enum):
    """Envoy ``retry_on`` conditions the waypoint implements (Istio passes ``retryOn`` through)."""

    FIVE_XX = "5xx"
    GATEWAY_ERROR = "gateway-error"
    CONNECT_FAILURE = "connect-failure"
    RETRIABLE_4XX = "retriable-4xx"
    RESET = "reset"
    REFUSED_STREAM = "refused-stream"
    RETRIABLE_STATUS_CODES = "retriable-status-codes"
    GRPC_CANCELLED = "cancelled"
    GRPC_DEADLINE_EXCEEDED = "deadline-exceeded"
    GRPC_INTERNAL = "internal"
    GRPC_RESOURCE_EXHAUSTED = "resource-exhausted"
    GRPC_UNAVAILABLE = "unavailable"


ISTIO_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
"""What Istio configures when a route sets no ``retries`` (with 503 retriable and 2 attempts)."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Istio ``HTTPRetry`` as Envoy runs it.

    ``attempts`` is Istio's field, which Envoy receives as ``num_retries``: the number of *retries*, so a
    request may be sent ``attempts + 1`` times in total (the original try plus the retries), all within
    the route timeout. ``attempts == 0`` disables retries.
    """

    attempts: int
    retry_on: frozenset[RetryOn] = frozenset()
    retriable_status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    backoff_base: float = 0.025
    backoff_max: float | None = None  # Envoy: 10 times the base when unset
    host_selection_attempts: int = 5  # Istio adds the previous_hosts predicate with 5 selection tries

    def __attrs_post_init__(self) -> None:
        if self.attempts < 0:
            raise WaypointConfigError(f"retry attempts {self.attempts} < 0", field="retries.attempts")
        if self.per_try_timeout is not None and self.per_try_timeout <= 0:
            raise WaypointConfigError("perTryTimeout must be positive", field="retries.perTryTimeout")
        if self.backoff_base <= 0:
            raise WaypointConfigError("retry back-off base must be positive", field="retries backoff")

    @classmethod
    def from_istio(
        cls, attempts: int, retry_on: str | None = None, per_try_timeout: float | None = None
    ) -> RetryPolicy:
        """Parse Istio's comma-separated ``retryOn``; a bare number (``"503"``) is a retriable status
        code, as Istio translates it. ``None`` means Istio's default conditions with 503 retriable."""
        conditions: set[RetryOn] = set()
        codes: set[int] = set()
        text = ISTIO_DEFAULT_RETRY_ON if retry_on is None else retry_on
        for token in (t.strip() for t in text.split(",")):
            if not token:
                continue
            if token.isdigit():
                codes.add(int(token))
                conditions.add(RetryOn.RETRIABLE_STATUS_CODES)
                continue
            try:
                conditions.add(RetryOn(token))
            except ValueError:
                known = ", ".join(c.value for c in RetryOn)
                raise WaypointConfigError(
                    f"unknown retryOn condition {token!r} (known: {known}, or a status code)",
                    field="retries.retryOn",
                ) from None
        if retry_on is None:
            codes.add(503)
        return cls(
            attempts=attempts,
            retry_on=frozenset(conditions),
            retriable_status_codes=frozenset(codes),
            per_try_timeout=per_try_timeout,
        )

    @property
    def effective_backoff_max(self) -> float:
        return self.backoff_max if self.backoff_max is not None else 10 * self.backoff_base


@attrs.frozen(kw_only=True)
class FaultDelay:
    """``percentage`` has no default on purpose: Istio hands an unset percentage to Envoy, whose unset
    fraction is 0 %, so the translator must state the value rather than inherit a guess."""

    fixed_delay: float
    percentage: float = attrs.field(converter=_percentage)


@attrs.frozen(kw_only=True)
class FaultAbort:
    """Abort with ``http_status``, or for gRPC with ``grpc_status`` (HTTP 200 + trailers-only status)."""

    percentage: float = attrs.field(converter=_percentage)
    http_status: int | None = None
    grpc_status: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.http_status is None) == (self.grpc_status is None):
            raise WaypointConfigError(
                "fault abort needs exactly one of httpStatus/grpcStatus", field="fault.abort"
            )
        if self.http_status is not None and not 200 <= self.http_status <= 599:
            raise WaypointConfigError(f"abort status {self.http_status} out of range", field="fault.abort")


@attrs.frozen(kw_only=True)
class FaultPolicy:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@attrs.frozen(kw_only=True)
class Route:
    """One Istio ``HTTPRoute`` entry. ``matches`` are ORed; no matches means match everything."""

    name: str
    action: RouteAction
    matches: tuple[RouteMatch, ...] = ()
    rewrite: Rewrite | None = None
    request_headers: HeaderOps = NO_HEADER_OPS
    response_headers: HeaderOps = NO_HEADER_OPS
    mirrors: tuple[Mirror, ...] = ()
    timeout: float | None = None  # None: no route timeout (Istio's default; Envoy's own default is 15 s)
    retry: RetryPolicy | None = None
    fault: FaultPolicy | None = None


@attrs.frozen(kw_only=True)
class RouteTable:
    """The ordered routes for one service port; the first matching route wins."""

    hostname: str
    port: int
    routes: tuple[Route, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.hostname, self.port)


class UpstreamFailure(enum.Enum):
    """Ways an upstream attempt can end without response headers, in Envoy's reset-reason terms.

    ``status`` is what Envoy answers downstream for it (and what outlier detection counts when local
    and upstream errors are not split); ``flag`` is the response flag the access log shows.
    """

    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    REFUSED_STREAM = "refused_stream"
    TIMEOUT = "timeout"  # per-try timeout
    OVERFLOW = "overflow"  # the waypoint's own circuit breaker refused; never the endpoint's fault

    @property
    def status(self) -> int:
        return 504 if self is UpstreamFailure.TIMEOUT else 503

    @property
    def flag(self) -> str:
        return {
            UpstreamFailure.CONNECT_FAILURE: "UF",
            UpstreamFailure.RESET: "UR",
            UpstreamFailure.REFUSED_STREAM: "UR",
            UpstreamFailure.TIMEOUT: "UT",
            UpstreamFailure.OVERFLOW: "UO",
        }[self]


# --------------------------------------------------------------------------------------------- clusters


class LbAlgorithm(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"  # Istio consistentHash


@attrs.frozen(kw_only=True)
class ConsistentHash:
    """Istio ``consistentHash``: exactly one key source. (``minimumRingSize`` is not modelled: the ring
    gives every endpoint a fixed number of points, see :mod:`waypoint.lb`.)"""

    header: str | None = attrs.field(default=None, converter=_lower_optional)
    cookie: str | None = None
    use_source_ip: bool = False
    query_parameter: str | None = None

    def __attrs_post_init__(self) -> None:
        sources = [self.header is not None, self.cookie is not None, self.use_source_ip,
                   self.query_parameter is not None]
        if sum(sources) != 1:
            raise WaypointConfigError(
                "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp, "
                "httpQueryParameterName", field="loadBalancer.consistentHash",
            )


@attrs.frozen(kw_only=True)
class ConnectionPoolSettings:
    """Istio ``connectionPool``; ``None`` is Istio's default (2^32-1, i.e. no limit)."""

    max_connections: int | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    connect_timeout: float = 10.0


@attrs.frozen(kw_only=True)
class OutlierDetection:
    """Istio ``outlierDetection`` with its defaults. ``consecutive_gateway_errors=None`` disables that
    detector (Istio's default); ``consecutive_5xx=None`` disables the 5xx one."""

    consecutive_5xx: int | None = 5
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0
    always_eject_one: bool = False  # Envoy always_eject_one_host; Istio does not set it

    def __attrs_post_init__(self) -> None:
        if self.interval <= 0 or self.base_ejection_time <= 0:
            raise WaypointConfigError(
                "interval and baseEjectionTime must be positive", field="outlierDetection"
            )
        if not 0 <= self.max_ejection_percent <= 100 or not 0 <= self.min_health_percent <= 100:
            raise WaypointConfigError("ejection/health percentages must be 0..100", field="outlierDetection")


@attrs.frozen(kw_only=True)
class ClusterPolicy:
    lb: LbAlgorithm = LbAlgorithm.ROUND_ROBIN
    consistent_hash: ConsistentHash | None = None
    connection_pool: ConnectionPoolSettings = ConnectionPoolSettings()
    outlier_detection: OutlierDetection | None = None

    def __attrs_post_init__(self) -> None:
        if (self.lb is LbAlgorithm.RING_HASH) != (self.consistent_hash is not None):
            raise WaypointConfigError(
                "RING_HASH and a consistentHash key go together", field="trafficPolicy.loadBalancer"
            )


@attrs.frozen(kw_only=True)
class Endpoint:
    """One upstream workload address; ``identity`` is its SPIFFE ID (the HBONE peer to expect)."""

    address: str
    port: int
    identity: str = ""
    labels: Pairs = attrs.field(default=(), converter=_pairs)
    weight: int = 1

    def __attrs_post_init__(self) -> None:
        if self.weight < 1:
            raise WaypointConfigError(f"endpoint {self.key} weight must be >= 1", field="endpoint weight")

    @property
    def key(self) -> str:
        """``address:port`` (IPv6 in brackets), the name outlier detection and stats use."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"
