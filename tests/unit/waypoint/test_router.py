"""Route selection: each case pins a documented Envoy/Istio routing behaviour."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.waypoint.binomial import interval_999
from waypoint.model import (
    ClusterKey,
    DirectResponse,
    HeaderMatch,
    HeaderOps,
    MatchKind,
    Mirror,
    QueryParamMatch,
    Redirect,
    Rewrite,
    Route,
    RouteMatch,
    RouteTable,
    StringMatch,
    WaypointConfigError,
    WeightedDestination,
    WeightedDestinations,
)
from waypoint.router import (
    Forward,
    LocalReply,
    RequestInfo,
    find_table,
    pick_destination,
    redirect_location,
    route,
)

V1 = ClusterKey(hostname="search-service.prod.svc.cluster.local", port=8080, subset="v1")
V2 = ClusterKey(hostname="search-service.prod.svc.cluster.local", port=8080, subset="v2")
OTHER = ClusterKey(hostname="other.prod.svc.cluster.local", port=80)


def req(path: str = "/", method: str = "GET", headers: dict[str, str] | None = None, port: int = 8080,
        authority: str = "search-api:8080", **kw: object) -> RequestInfo:
    pairs = tuple((k.encode(), v.encode()) for k, v in (headers or {}).items())
    return RequestInfo(method=method, path=path, authority=authority, port=port, headers=pairs, **kw)  # type: ignore[arg-type]


def fwd(name: str, cluster: ClusterKey, *matches: RouteMatch, **kw: object) -> Route:
    return Route(name=name, action=WeightedDestinations.single(cluster), matches=matches, **kw)  # type: ignore[arg-type]


def table(*routes: Route) -> RouteTable:
    return RouteTable(hostname="search-api.prod.svc.cluster.local", port=8080, routes=routes)


def uri(kind: MatchKind, value: str, ignore_case: bool = False) -> RouteMatch:
    return RouteMatch(uri=StringMatch(kind=kind, value=value, ignore_case=ignore_case))


def header(name: str, match: StringMatch, invert: bool = False) -> RouteMatch:
    return RouteMatch(headers=(HeaderMatch(name=name, match=match, invert=invert),))


RNG = random.Random(7)

MATCH_CASES = [
    # (id, route match, request, should match)
    ("exact-path-ignores-query", uri(MatchKind.EXACT, "/api"), req("/api?x=1"), True),
    ("exact-path-is-exact", uri(MatchKind.EXACT, "/api"), req("/api/x"), False),
    ("prefix-is-plain-string-prefix (Envoy prefix, not segment-aware)", uri(MatchKind.PREFIX, "/api"),
     req("/apix"), True),
    ("prefix-case-sensitive-by-default", uri(MatchKind.PREFIX, "/API"), req("/api"), False),
    ("ignoreUriCase-makes-prefix-case-insensitive", uri(MatchKind.PREFIX, "/API", True), req("/api/v"), True),
    ("regex-is-full-match", uri(MatchKind.REGEX, "/v[0-9]+"), req("/v12/x"), False),
    ("regex-full-match-ignores-query", uri(MatchKind.REGEX, "/v[0-9]+"), req("/v12?a=b"), True),
    ("gateway-api-PathPrefix-is-segment-aware",
     uri(MatchKind.PATH_SEPARATED_PREFIX, "/api"), req("/apix"), False),
    ("gateway-api-PathPrefix-matches-subpath",
     uri(MatchKind.PATH_SEPARATED_PREFIX, "/api/"), req("/api/v"), True),
    ("gateway-api-PathPrefix-matches-itself",
     uri(MatchKind.PATH_SEPARATED_PREFIX, "/api"), req("/api?q"), True),
    ("method-exact", RouteMatch(method=StringMatch.exact("POST")), req(method="GET"), False),
    ("header-exact", header("x-user", StringMatch.exact("alice")), req(headers={"x-user": "alice"}), True),
    ("header-name-case-insensitive", header("X-User", StringMatch.exact("alice")),
     req(headers={"x-user": "alice"}), True),
    ("header-prefix", header("x-user", StringMatch.prefix("al")), req(headers={"x-user": "alice"}), True),
    ("header-regex", header("x-user", StringMatch.regex("a.*e")), req(headers={"x-user": "alice"}), True),
    ("header-missing-fails-positive-match", header("x-user", StringMatch.present()), req(), False),
    ("withoutHeaders-satisfied-by-absent-header",
     header("x-canary", StringMatch.exact("1"), True), req(), True),
    ("withoutHeaders-rejects-matching-value", header("x-canary", StringMatch.exact("1"), True),
     req(headers={"x-canary": "1"}), False),
    ("withoutHeaders-compares-missing-as-empty (treat_missing_header_as_empty)",
     header("x-canary", StringMatch.exact(""), True), req(), False),
    ("withoutHeaders-presence-means-absent", header("x-canary", StringMatch.present(), True), req(), True),
    ("query-exact", RouteMatch(query_params=(QueryParamMatch(name="v", match=StringMatch.exact("2")),)),
     req("/p?a=1&v=2"), True),
    ("query-missing", RouteMatch(query_params=(QueryParamMatch(name="v", match=StringMatch.present()),)),
     req("/p?a=1"), False),
    ("port-match", RouteMatch(port=9090), req(port=8080), False),
    ("sourceLabels-all-must-match", RouteMatch(source_labels={"app": "web", "version": "v1"}),
     req(source_labels={"app": "web", "version": "v1", "x": "y"}), True),
    ("sourceLabels-mismatch",
     RouteMatch(source_labels={"app": "web"}), req(source_labels={"app": "db"}), False),
    ("sourceNamespace", RouteMatch(source_namespace="prod"), req(source_namespace="dev"), False),
    ("fields-AND-together", RouteMatch(uri=StringMatch.prefix("/a"), method=StringMatch.exact("GET")),
     req("/a", method="PUT"), False),
]


@pytest.mark.parametrize(("match", "request_info", "expected"),
                         [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_match_semantics(match: RouteMatch, request_info: RequestInfo, expected: bool) -> None:
    decision = route(table(fwd("r", V1, match)), request_info, RNG)
    assert isinstance(decision, Forward) is expected


def test_first_matching_route_wins_even_if_a_later_one_is_more_specific() -> None:
    t = table(fwd("broad", V1, uri(MatchKind.PREFIX, "/")), fwd("specific", V2, uri(MatchKind.EXACT, "/x")))
    decision = route(t, req("/x"), RNG)
    assert isinstance(decision, Forward) and decision.route_name == "broad" and decision.cluster == V1


def test_match_blocks_are_ored() -> None:
    t = table(fwd("r", V1, uri(MatchKind.EXACT, "/a"), uri(MatchKind.EXACT, "/b")))
    assert isinstance(route(t, req("/b"), RNG), Forward)


def test_route_without_matches_matches_everything() -> None:
    assert isinstance(route(table(fwd("all", V1)), req("/anything"), RNG), Forward)


@pytest.mark.parametrize("tbl", [table(fwd("r", V1, uri(MatchKind.EXACT, "/only"))), table(), None],
                         ids=["no-route-matches", "empty-table", "unknown-service"])
def test_no_route_is_404_with_flag_NR(tbl: RouteTable | None) -> None:
    decision = route(tbl, req("/other"), RNG)
    assert isinstance(decision, LocalReply)
    assert (decision.status, decision.flags, decision.details) == (404, "NR", "route_not_found")


def test_weighted_95_5_split_within_999_binomial_interval() -> None:
    split = WeightedDestinations(destinations=(WeightedDestination(cluster=V1, weight=95),
                                               WeightedDestination(cluster=V2, weight=5)))
    t = table(Route(name="canary", action=split))
    rng = random.Random(20240501)
    n = 4000
    v2 = 0
    for _ in range(n):
        decision = route(t, req(), rng)
        assert isinstance(decision, Forward)
        v2 += decision.cluster == V2
    low, high = interval_999(n, 0.05)
    assert low <= v2 <= high, (v2, low, high)


def test_weight_zero_destination_is_never_picked_100_0_rollback() -> None:
    split = WeightedDestinations(destinations=(WeightedDestination(cluster=V1, weight=100),
                                               WeightedDestination(cluster=V2, weight=0)))
    t = table(Route(name="rollback", action=split))
    rng = random.Random(1)
    clusters = set()
    for _ in range(500):
        decision = route(t, req(), rng)
        assert isinstance(decision, Forward)
        clusters.add(decision.cluster)
    assert clusters == {V1}


@pytest.mark.parametrize("weights", [(0, 0), ()], ids=["all-zero", "no-destinations"])
def test_invalid_weight_sets_are_rejected_with_a_hint(weights: tuple[int, ...]) -> None:
    with pytest.raises(WaypointConfigError) as info:
        WeightedDestinations(destinations=tuple(WeightedDestination(cluster=V1, weight=w) for w in weights))
    assert "hint" in str(info.value)


REWRITE_CASES = [
    # (id, match, rewrite uri, request path, forwarded path)
    ("prefix-rewrite-replaces-matched-prefix", uri(MatchKind.PREFIX, "/v1"), "/v2", "/v1/items?x=1",
     "/v2/items?x=1"),
    ("prefix-rewrite-to-root", uri(MatchKind.PREFIX, "/api/"), "/", "/api/items", "/items"),
    ("exact-match-rewrites-whole-path-keeps-query",
     uri(MatchKind.EXACT, "/old"), "/new", "/old?q=1", "/new?q=1"),
    ("regex-match-rewrites-whole-path", uri(MatchKind.REGEX, "/o.d"), "/new", "/old", "/new"),
    ("ignore-case-prefix-replaces-by-length", uri(MatchKind.PREFIX, "/V1", True), "/v2", "/v1/a", "/v2/a"),
    ("gateway-ReplacePrefixMatch", uri(MatchKind.PATH_SEPARATED_PREFIX, "/foo"), "/", "/foo/bar", "/bar"),
]


@pytest.mark.parametrize(("match", "new", "path", "expected"), [c[1:] for c in REWRITE_CASES],
                         ids=[c[0] for c in REWRITE_CASES])
def test_uri_rewrite(match: RouteMatch, new: str, path: str, expected: str) -> None:
    decision = route(table(fwd("r", V1, match, rewrite=Rewrite(uri=new))), req(path), RNG)
    assert isinstance(decision, Forward) and decision.path == expected


def test_uri_regex_rewrite_substitutes_groups() -> None:
    rewrite = Rewrite(uri_regex=(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1"))
    decision = route(table(fwd("r", V1, rewrite=rewrite)), req("/service/foo/v1/api?x"), RNG)
    assert isinstance(decision, Forward) and decision.path == "/v1/api/instance/foo?x"


def test_authority_rewrite() -> None:
    decision = route(table(fwd("r", V1, rewrite=Rewrite(authority="backend.internal"))), req(), RNG)
    assert isinstance(decision, Forward) and decision.authority == "backend.internal"


def test_header_ops_destination_level_then_route_level() -> None:
    dest = WeightedDestination(cluster=V1, weight=1, request_headers=HeaderOps(set=(("x-level", "dest"),),
                                                                               add=(("x-dest", "1"),)))
    r = Route(name="r", action=WeightedDestinations(destinations=(dest,)),
              request_headers=HeaderOps(set=(("x-level", "route"),), remove=("x-secret",)),
              response_headers=HeaderOps(add=(("x-served-by", "waypoint"),)))
    decision = route(table(r), req(headers={"x-secret": "s", "x-keep": "k"}), RNG)
    assert isinstance(decision, Forward)
    assert decision.headers == ((b"x-keep", b"k"), (b"x-dest", b"1"), (b"x-level", b"route"))
    assert decision.response_header_ops == (r.response_headers,)


REDIRECT_CASES = [
    # (id, redirect, request (path, authority, scheme), Location)
    ("uri-replaces-whole-path-keeps-query", Redirect(uri="/new"), ("/old/x?a=1", "svc:8080", "http"),
     "http://svc:8080/new?a=1"),
    ("uri-with-query-replaces-query", Redirect(uri="/new?b=2"), ("/old?a=1", "svc", "http"), "http://svc/new?b=2"),
    ("strip-query", Redirect(uri="/n", strip_query=True), ("/o?a=1", "svc", "http"), "http://svc/n"),
    ("authority-redirect-keeps-path", Redirect(authority="new.example.com"), ("/p", "svc:8080", "http"),
     "http://new.example.com/p"),
    ("https-redirect-drops-default-http-port", Redirect(scheme="https"), ("/p", "svc:80", "http"),
     "https://svc/p"),
    ("https-redirect-keeps-custom-port", Redirect(scheme="https"), ("/p", "svc:8080", "http"),
     "https://svc:8080/p"),
    ("port-redirect", Redirect(port=9443), ("/p", "svc:8080", "http"), "http://svc:9443/p"),
]


@pytest.mark.parametrize(("redirect", "request_parts", "location"), [c[1:] for c in REDIRECT_CASES],
                         ids=[c[0] for c in REDIRECT_CASES])
def test_redirect_location(redirect: Redirect, request_parts: tuple[str, str, str], location: str) -> None:
    path, authority, scheme = request_parts
    assert redirect_location(redirect, req(path, authority=authority, scheme=scheme)) == location


def test_redirect_route_answers_301_by_default() -> None:
    decision = route(table(Route(name="moved", action=Redirect(uri="/v2"))), req("/v1"), RNG)
    assert isinstance(decision, LocalReply)
    assert decision.status == 301 and dict(decision.headers)["location"] == "http://search-api:8080/v2"


def test_direct_response() -> None:
    decision = route(table(Route(name="teapot", action=DirectResponse(status=418, body="short and stout"))),
                     req(), RNG)
    assert isinstance(decision, LocalReply)
    assert (decision.status, decision.body, decision.route_name) == (418, "short and stout", "teapot")


def test_mirror_sampled_by_percentage_with_shadow_authority() -> None:
    r = fwd("r", V1, mirrors=(Mirror(cluster=OTHER, percentage=50.0),))
    rng = random.Random(3)
    mirrored = 0
    for _ in range(2000):
        decision = route(table(r), req(), rng)
        assert isinstance(decision, Forward)
        if decision.mirrors:
            mirrored += 1
            assert decision.mirrors[0].cluster == OTHER
            assert decision.mirrors[0].authority == "search-api-shadow:8080"
    low, high = interval_999(2000, 0.5)
    assert low <= mirrored <= high


def test_bad_regex_is_rejected_with_hint() -> None:
    with pytest.raises(WaypointConfigError, match="invalid regex"):
        StringMatch.regex("(")


def test_find_table_by_service_and_port() -> None:
    t = table()
    assert find_table([t], "search-api.prod.svc.cluster.local", 8080) is t
    assert find_table([t], "search-api.prod.svc.cluster.local", 9090) is None


def test_cluster_name_is_istio_form() -> None:
    assert V1.name == "outbound|8080|v1|search-service.prod.svc.cluster.local"


def test_request_info_from_a_proxied_message_routes_like_the_wire_request() -> None:
    from waypoint.messages import Request

    message = Request(method=b"GET", path=b"/api/v1?x=1", authority=b"search-api:8080",
                      headers=[(b"x-user", b"alice"), (b"x-user", b"bob")])
    info = RequestInfo.from_message(message, port=8080, source_namespace="prod")
    assert info.header("x-user") == "alice,bob"  # Envoy joins repeated headers for matching
    alice = HeaderMatch(name="x-user", match=StringMatch.prefix("alice"))
    t = table(fwd("r", V2, RouteMatch(uri=StringMatch.prefix("/api"), headers=(alice,))))
    decision = route(t, info, RNG)
    assert isinstance(decision, Forward) and decision.cluster == V2
    assert decision.headers == ((b"x-user", b"alice"), (b"x-user", b"bob"))


WEIGHT_LISTS = st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=5).filter(
    lambda ws: sum(ws) > 0
)


@given(WEIGHT_LISTS, st.integers(min_value=0, max_value=2**32))
def test_weighted_pick_never_selects_a_zero_weight_destination(weights: list[int], seed: int) -> None:
    split = WeightedDestinations(destinations=tuple(
        WeightedDestination(cluster=ClusterKey(hostname=f"s{i}", port=80), weight=w)
        for i, w in enumerate(weights)
    ))
    rng = random.Random(seed)
    for _ in range(20):
        assert pick_destination(split, rng).weight > 0
