"""Route selection: a request and a :class:`RouteTable` in, a routing decision out.

Envoy's (and so Istio's) rules: routes are tried in order and the first whose match holds wins; a
route with several match blocks matches if any block does; no route → local ``404`` with response
flag ``NR``. A forwarding route picks one weighted destination with ``random % total_weight`` walked
over the cumulative weights, so integer weights 95/5 give exactly a 95 % / 5 % split in expectation.

The decision already carries the rewritten path/authority, the mutated request headers, the response
header operations to apply later, and the sampled mirrors, so the shell only has to act on it.
No I/O and no global randomness: callers pass a ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

import attrs

from waypoint.headers import apply_all, rewrite_path, shadow_authority, split_authority, split_path
from waypoint.messages import Request
from waypoint.model import (
    NO_HEADER_OPS,
    ClusterKey,
    DirectResponse,
    FaultPolicy,
    HeaderMatch,
    HeaderOps,
    MatchKind,
    Redirect,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    WeightedDestination,
    WeightedDestinations,
    sampled,
)

HeaderTuple = tuple[tuple[bytes, bytes], ...]


def _header_tuple(headers: Iterable[tuple[bytes, bytes]]) -> HeaderTuple:
    return tuple(headers)


@attrs.frozen(kw_only=True)
class RequestInfo:
    """What routing may look at. ``path`` is the raw ``:path`` including any query string; ``headers``
    are lower-case byte names without pseudo-headers; ``port`` is the service port dialled."""

    method: str
    path: str
    authority: str
    port: int
    headers: HeaderTuple = attrs.field(default=(), converter=_header_tuple)
    scheme: str = "http"
    source_labels: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)
    source_namespace: str | None = None

    @classmethod
    def from_message(
        cls,
        request: Request,
        *,
        port: int,
        source_labels: Mapping[str, str] | None = None,
        source_namespace: str | None = None,
    ) -> RequestInfo:
        """The routing view of a proxied request (HTTP/1.1 or HTTP/2 alike)."""
        return cls(
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            authority=request.authority.decode("latin-1"),
            port=port,
            headers=request.headers,
            scheme=request.scheme.decode("latin-1"),
            source_labels=dict(source_labels or {}),
            source_namespace=source_namespace,
        )

    def header(self, name: str) -> str | None:
        """All values of ``name`` joined with ``,`` (Envoy's rule for matching multi-valued headers)."""
        key = name.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in self.headers if k == key]
        return ",".join(values) if values else None

    def query_param(self, name: str) -> str | None:
        """First value of query parameter ``name`` (percent-decoded), or None, or None."""
        _, query = split_path(self.path)
        for key, value in parse_qsl(query[1:], keep_blank_values=True):
            if key == name:
                return value
        return None


@attrs.frozen(kw_only=True)
class MirrorDecision:
    cluster: ClusterKey
    authority: str


@attrs.frozen(kw_only=True)
class Forward:
    """Send the (rewritten) request to ``cluster``. ``response_header_ops`` run in order on the reply."""

    route_name: str
    cluster: ClusterKey
    method: str
    path: str
    authority: str
    headers: HeaderTuple
    response_header_ops: tuple[HeaderOps, ...] = ()
    timeout: float | None = None
    retry: RetryPolicy | None = None
    fault: FaultPolicy | None = None
    mirrors: tuple[MirrorDecision, ...] = ()


@attrs.frozen(kw_only=True)
class LocalReply:
    """A reply the waypoint makes itself (no route, redirect, direct response), like Envoy's local replies.

    ``details`` is Envoy's response code details string for the access log.
    """

    status: int
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    flags: str = "-"
    details: str = ""
    route_name: str | None = None


RouteDecision = Forward | LocalReply

NO_ROUTE = LocalReply(status=404, flags="NR", details="route_not_found")


def route(table: RouteTable | None, request: RequestInfo, rng: random.Random) -> RouteDecision:
    """First matching route wins; ``table=None`` (unknown service) is also ``404 NR``."""
    if table is None:
        return NO_ROUTE
    for candidate in table.routes:
        matched, which = route_matches(candidate, request)
        if matched:
            return _act(candidate, which, request, rng)
    return NO_ROUTE


def route_matches(candidate: Route, request: RequestInfo) -> tuple[bool, RouteMatch | None]:
    """Whether ``candidate`` applies, and which match block did it (rewrites depend on it)."""
    if not candidate.matches:
        return True, None
    for block in candidate.matches:
        if match_request(block, request):
            return True, block
    return False, None


def match_request(block: RouteMatch, request: RequestInfo) -> bool:
    if block.port is not None and block.port != request.port:
        return False
    if block.uri is not None and not _uri_matches(block, request.path):
        return False
    if block.method is not None and not block.method.matches(request.method):
        return False
    if block.authority is not None and not block.authority.matches(request.authority):
        return False
    if block.source_namespace is not None and block.source_namespace != request.source_namespace:
        return False
    if any(request.source_labels.get(k) != v for k, v in block.source_labels):
        return False
    for query in block.query_params:
        value = request.query_param(query.name)
        if value is None or not query.match.matches(value):
            return False
    return all(_header_matches(h, request.header(h.name)) for h in block.headers)


def _uri_matches(block: RouteMatch, path: str) -> bool:
    uri = block.uri
    assert uri is not None
    if uri.kind is MatchKind.PREFIX:
        return uri.matches(path)  # Envoy: the prefix is compared with the whole :path
    only_path, _ = split_path(path)
    return uri.matches(only_path)


def _header_matches(matcher: HeaderMatch, value: str | None) -> bool:
    """A missing header fails a positive matcher. Istio's ``withoutHeaders`` is Envoy ``invert_match`` with
    ``treat_missing_header_as_empty``: a missing header is compared as ``""`` and the result inverted
    (so an absent header satisfies ``withoutHeaders: {x: {exact: "1"}}``), while an inverted presence
    match simply means "absent"."""
    if matcher.invert and value is None and matcher.match.kind is not MatchKind.PRESENT:
        value = ""
    hit = value is not None and matcher.match.matches(value)
    return not hit if matcher.invert else hit


def pick_destination(action: WeightedDestinations, rng: random.Random) -> WeightedDestination:
    """Envoy's weighted-cluster pick: ``r = random % total``; the first cumulative weight above ``r``."""
    point = rng.randrange(action.total_weight)
    cumulative = 0
    for destination in action.destinations:
        cumulative += destination.weight
        if point < cumulative:
            return destination
    raise AssertionError("weights changed under iteration")  # pragma: no cover - total_weight > 0


def _act(
    candidate: Route, matched: RouteMatch | None, request: RequestInfo, rng: random.Random
) -> RouteDecision:
    action = candidate.action
    if isinstance(action, DirectResponse):
        content_type = (("content-type", "text/plain"),) if action.body else ()
        return LocalReply(
            status=action.status, body=action.body, headers=content_type, details="direct_response",
            route_name=candidate.name,
        )
    if isinstance(action, Redirect):
        return LocalReply(
            status=action.status,
            headers=(("location", redirect_location(action, request)),),
            details="redirect",
            route_name=candidate.name,
        )
    destination = pick_destination(action, rng)
    path = rewrite_path(request.path, candidate.rewrite, matched) if candidate.rewrite else request.path
    authority = request.authority
    if candidate.rewrite is not None and candidate.rewrite.authority is not None:
        authority = candidate.rewrite.authority
    headers = apply_all(request.headers, _levels(destination.request_headers, candidate.request_headers))
    mirrors = tuple(
        MirrorDecision(cluster=m.cluster, authority=shadow_authority(authority))
        for m in candidate.mirrors
        if sampled(m.percentage, rng)
    )
    return Forward(
        route_name=candidate.name,
        cluster=destination.cluster,
        method=request.method,
        path=path,
        authority=authority,
        headers=tuple(headers),
        response_header_ops=_levels(destination.response_headers, candidate.response_headers),
        timeout=candidate.timeout,
        retry=candidate.retry,
        fault=candidate.fault,
        mirrors=mirrors,
    )


def _levels(*levels: HeaderOps) -> tuple[HeaderOps, ...]:
    return tuple(level for level in levels if level is not NO_HEADER_OPS and not level.empty)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_location(redirect: Redirect, request: RequestInfo) -> str:
    """The ``Location`` Envoy builds: scheme, host[:port], path and (unless replaced/stripped) query.

    The host is the redirect's authority or the request's. A port given by the redirect replaces the
    host's port; when the scheme changes, a port that was the old scheme's default is dropped; a port
    equal to the (new) scheme's default is never written.
    """
    scheme = redirect.scheme or request.scheme
    host, port = split_authority(redirect.authority or request.authority)
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme not in (None, request.scheme) and port == _DEFAULT_PORTS.get(request.scheme):
        port = None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    original_path, original_query = split_path(request.path)
    if redirect.uri is not None:
        new_path, new_query = split_path(redirect.uri)
        path = new_path
        query = new_query or original_query
    else:
        path, query = original_path, original_query
    if redirect.strip_query:
        query = ""
    authority = host if port is None else f"{host}:{port}"
    return f"{scheme}://{authority}{path}{query}"


def find_table(tables: Sequence[RouteTable], hostname: str, port: int) -> RouteTable | None:
    """The table bound to service ``hostname:port`` (linear: a waypoint serves few services)."""
    for table in tables:
        if table.hostname == hostname and table.port == port:
            return table
    return None
