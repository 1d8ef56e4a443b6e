"""``gateway.networking.k8s.io`` Gateway and HTTPRoute (Kubernetes Gateway API).

In ambient mode a Gateway of class ``istio-waypoint`` deploys a waypoint, and an HTTPRoute whose
``parentRefs`` name a *Service* (the GAMMA pattern) configures that service's L7 routing. Unlike
VirtualService weights, ``backendRefs`` weights are proportions and need not sum to 100.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from typing import ClassVar

import attrs

from schemas.common import Duration, ObjectMeta, meta
from schemas.errors import Problem

GROUP = "gateway.networking.k8s.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
PORT = meta(minimum=1, maximum=65535)


class FromNamespaces(enum.StrEnum):
    ALL = "All"
    SAME = "Same"
    SELECTOR = "Selector"


@attrs.frozen(kw_only=True)
class RouteNamespaces:
    from_: FromNamespaces = FromNamespaces.SAME


@attrs.frozen(kw_only=True)
class RouteGroupKind:
    group: str | None = None
    kind: str


@attrs.frozen(kw_only=True)
class AllowedRoutes:
    namespaces: RouteNamespaces | None = None
    kinds: tuple[RouteGroupKind, ...] = ()


@attrs.frozen(kw_only=True)
class Listener:
    """``protocol`` is a free string in the Gateway API (HTTP, HTTPS, TCP, TLS, HBONE for waypoints …)."""

    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {"tls": "TLS termination at a Gateway is not implemented"}

    name: str
    hostname: str | None = None
    port: int = attrs.field(metadata=PORT)
    protocol: str
    allowed_routes: AllowedRoutes | None = None


@attrs.frozen(kw_only=True)
class GatewaySpec:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "addresses": "Gateway addresses are assigned by the mesh, not requested",
        "infrastructure": "Gateway infrastructure settings are not implemented",
    }

    gateway_class_name: str
    listeners: tuple[Listener, ...] = attrs.field(metadata=meta(min_items=1))


@attrs.frozen(kw_only=True)
class Gateway:
    KIND: ClassVar[str] = "Gateway"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="Gateway", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: GatewaySpec


# ------------------------------------------------------------------------------------- HTTPRoute


@attrs.frozen(kw_only=True)
class ParentReference:
    """A Gateway (default) or, with ``group: ""`` and ``kind: Service``, a Service (GAMMA)."""

    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = attrs.field(default=None, metadata=PORT)


class PathMatchType(enum.StrEnum):
    EXACT = "Exact"
    PATH_PREFIX = "PathPrefix"
    REGULAR_EXPRESSION = "RegularExpression"


class MatchType(enum.StrEnum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


class HTTPMethod(enum.StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    CONNECT = "CONNECT"
    OPTIONS = "OPTIONS"
    TRACE = "TRACE"
    PATCH = "PATCH"


@attrs.frozen(kw_only=True)
class HTTPPathMatch:
    type: PathMatchType = PathMatchType.PATH_PREFIX
    value: str = "/"


@attrs.frozen(kw_only=True)
class HTTPHeaderMatch:
    type: MatchType = MatchType.EXACT
    name: str
    value: str


@attrs.frozen(kw_only=True)
class HTTPQueryParamMatch:
    type: MatchType = MatchType.EXACT
    name: str
    value: str


@attrs.frozen(kw_only=True)
class HTTPRouteMatch:
    path: HTTPPathMatch | None = None
    headers: tuple[HTTPHeaderMatch, ...] = ()
    query_params: tuple[HTTPQueryParamMatch, ...] = ()
    method: HTTPMethod | None = None


@attrs.frozen(kw_only=True)
class HTTPHeader:
    name: str
    value: str


@attrs.frozen(kw_only=True)
class HTTPHeaderFilter:
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


class PathModifierType(enum.StrEnum):
    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


@attrs.frozen(kw_only=True)
class HTTPPathModifier:
    type: PathModifierType
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


@attrs.frozen(kw_only=True)
class HTTPRequestRedirectFilter:
    scheme: str | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = attrs.field(default=None, metadata=PORT)
    status_code: int | None = attrs.field(default=None, metadata=meta(minimum=300, maximum=399))


@attrs.frozen(kw_only=True)
class HTTPURLRewriteFilter:
    hostname: str | None = None
    path: HTTPPathModifier | None = None


@attrs.frozen(kw_only=True)
class BackendObjectReference:
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = attrs.field(default=None, metadata=PORT)


@attrs.frozen(kw_only=True)
class HTTPRequestMirrorFilter:
    backend_ref: BackendObjectReference


class FilterType(enum.StrEnum):
    REQUEST_HEADER_MODIFIER = "RequestHeaderModifier"
    RESPONSE_HEADER_MODIFIER = "ResponseHeaderModifier"
    REQUEST_REDIRECT = "RequestRedirect"
    URL_REWRITE = "URLRewrite"
    REQUEST_MIRROR = "RequestMirror"


# Which field each filter type configures; exactly that one must be set.
FILTER_FIELDS: dict[FilterType, tuple[str, str]] = {
    FilterType.REQUEST_HEADER_MODIFIER: ("requestHeaderModifier", "request_header_modifier"),
    FilterType.RESPONSE_HEADER_MODIFIER: ("responseHeaderModifier", "response_header_modifier"),
    FilterType.REQUEST_REDIRECT: ("requestRedirect", "request_redirect"),
    FilterType.URL_REWRITE: ("urlRewrite", "url_rewrite"),
    FilterType.REQUEST_MIRROR: ("requestMirror", "request_mirror"),
}


@attrs.frozen(kw_only=True)
class HTTPRouteFilter:
    type: FilterType
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None


@attrs.frozen(kw_only=True)
class HTTPBackendRef:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {"filters": "per-backend filters are not implemented"}

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = attrs.field(default=None, metadata=PORT)
    weight: int = attrs.field(default=1, metadata=meta(minimum=0, maximum=1_000_000))


@attrs.frozen(kw_only=True)
class HTTPRouteTimeouts:
    request: Duration | None = None
    backend_request: Duration | None = None


@attrs.frozen(kw_only=True)
class HTTPRouteRule:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "retry": "HTTPRoute retries (experimental) are not implemented; use a VirtualService",
        "sessionPersistence": "session persistence is not implemented",
    }

    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = ()
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: HTTPRouteTimeouts | None = None


@attrs.frozen(kw_only=True)
class HTTPRouteSpec:
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = ()


@attrs.frozen(kw_only=True)
class HTTPRoute:
    KIND: ClassVar[str] = "HTTPRoute"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="HTTPRoute", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: HTTPRouteSpec


def is_service_parent(ref: ParentReference) -> bool:
    """GAMMA: a parentRef to a core Service configures that service's mesh (waypoint) routing."""
    return ref.kind == "Service" and (ref.group or "") == ""


def is_service_backend(ref: HTTPBackendRef) -> bool:
    """A backendRef names a core Service unless it says otherwise (group "" and kind Service by default)."""
    return (ref.kind or "Service") == "Service" and (ref.group or "") == ""


def check_gateway(gw: Gateway) -> list[Problem]:
    counts = Counter(listener.name for listener in gw.spec.listeners)
    return [
        Problem(path=("spec", "listeners", i, "name"), message=f'duplicate listener name "{listener.name}"')
        for i, listener in enumerate(gw.spec.listeners)
        if counts[listener.name] > 1
    ]


def check_http_route(route: HTTPRoute) -> list[Problem]:
    out: list[Problem] = []
    for i, rule in enumerate(route.spec.rules):
        for j, match in enumerate(rule.matches):
            path = match.path
            if (
                path is not None
                and path.type is not PathMatchType.REGULAR_EXPRESSION
                and not path.value.startswith("/")
            ):
                at = ("spec", "rules", i, "matches", j, "path", "value")
                out.append(
                    Problem(path=at, message=f'a {path.type} path must start with "/", got "{path.value}"')
                )
        for j, backend in enumerate(rule.backend_refs):
            if is_service_backend(backend) and backend.port is None:
                message = "a Service backend needs a port (Gateway API rule)"
                out.append(Problem(path=("spec", "rules", i, "backendRefs", j, "port"), message=message))
        for j, filt in enumerate(rule.filters):
            out += _filter_problems(filt, ("spec", "rules", i, "filters", j))
    return out


def _filter_problems(filt: HTTPRouteFilter, at: tuple[str | int, ...]) -> list[Problem]:
    """The Gateway API's discriminated union: ``type`` names the one config field that must be set."""
    out = []
    for filter_type, (key, attr) in FILTER_FIELDS.items():
        value = getattr(filt, attr)
        if filter_type is filt.type and value is None:
            out.append(Problem(path=(*at, key), message=f"a {filt.type} filter needs {key}"))
        elif filter_type is not filt.type and value is not None:
            out.append(Problem(path=(*at, key), message=f"{key} is only allowed with type {filter_type}"))
    return out
