"""VirtualService / HTTPRoute → RouteTables, checked by routing real requests with the waypoint's
own router (``waypoint.router.route``) over the translated tables."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from istiod_lite.translate import MeshSnapshot, translate
from tests.unit.istiod_lite.translate.helpers import load, pod
from waypoint import model
from waypoint.router import Forward, LocalReply, RequestInfo, route

NS = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90, targetPort: 9090}]
"""
REVIEWS = "reviews.prod.svc.cluster.local"
RATINGS = "ratings.prod.svc.cluster.local"
PODS = [
    pod("reviews-v1-0", ip="10.0.1.1", labels={"app": "reviews", "version": "v1"}),
    pod("reviews-v2-0", ip="10.0.1.2", labels={"app": "reviews", "version": "v2"}),
    pod("ratings-0", ip="10.0.2.1", labels={"app": "ratings"}),
]


def _translate(extra: str = "") -> MeshSnapshot:
    return translate(load(NS + ("---\n" + extra if extra else "")), PODS)


def _route(snapshot: MeshSnapshot, host: str, port: int, path: str = "/", method: str = "GET",
           headers: tuple[tuple[bytes, bytes], ...] = ()) -> Forward | LocalReply:
    table = snapshot.waypoints["prod/wp"].route_table(host, port)
    request = RequestInfo(method=method, path=path, authority=f"{host}:{port}", port=port, headers=headers)
    return route(table, request, random.Random(7))


def test_a_service_without_routes_gets_one_default_route_to_itself_with_istios_default_retries() -> None:
    snapshot = _translate()
    decision = _route(snapshot, RATINGS, 90)
    assert isinstance(decision, Forward) and decision.cluster == model.ClusterKey(hostname=RATINGS, port=90)
    assert decision.retry is not None and decision.retry.attempts == 2 and 503 in decision.retry.retriable_status_codes


BOOKINFO = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
    - name: jason
      match:
        - headers: {end-user: {exact: jason}}
          uri: {prefix: /API}
          ignoreUriCase: true
      route: [{destination: {host: reviews, subset: v2}}]
      fault: {abort: {httpStatus: 418}}
    - name: old
      match: [{uri: {exact: /old}}]
      redirect: {uri: /new, redirectCode: 308}
    - name: rest
      route:
        - destination: {host: reviews, subset: v1}
          weight: 80
          headers: {response: {set: {x-version: v1}}}
        - destination: {host: ratings}
          weight: 20
      rewrite: {uri: /v1}
      timeout: 2s
      retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,gateway-error,no-such-thing"}
      mirror: {host: ratings, port: {number: 90}}
      headers: {request: {add: {x-canary: "yes"}, remove: [x-debug]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: prod}
spec:
  host: reviews.prod.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def test_virtual_service_http_routes_keep_order_and_istio_match_semantics() -> None:
    snapshot = _translate(BOOKINFO)
    jason = _route(snapshot, REVIEWS, 9080, "/api/x", headers=((b"end-user", b"jason"),))
    assert isinstance(jason, Forward) and jason.route_name == "jason"
    assert jason.cluster == model.ClusterKey(hostname=REVIEWS, port=9080, subset="v2")
    assert jason.fault is not None and jason.fault.abort is not None
    assert jason.fault.abort.percentage == 0.0  # unset percentage: Istio injects nothing
    old = _route(snapshot, REVIEWS, 9080, "/old")
    assert isinstance(old, LocalReply) and old.status == 308
    rest = _route(snapshot, REVIEWS, 9080, "/api/x")  # no end-user header: falls through to "rest"
    assert isinstance(rest, Forward) and rest.route_name == "rest"


def test_virtual_service_route_options_translate_to_the_waypoint_model() -> None:
    snapshot = _translate(BOOKINFO)
    table = snapshot.waypoints["prod/wp"].route_table(REVIEWS, 9080)
    assert table is not None
    rest = table.routes[2]
    assert isinstance(rest.action, model.WeightedDestinations)
    assert [(d.cluster, d.weight) for d in rest.action.destinations] == [
        (model.ClusterKey(hostname=REVIEWS, port=9080, subset="v1"), 80),
        (model.ClusterKey(hostname=RATINGS, port=9080), 20),  # ratings has two ports: the request's port
    ]
    assert rest.action.destinations[0].response_headers.set == (("x-version", "v1"),)
    assert rest.rewrite == model.Rewrite(uri="/v1")
    assert rest.timeout == 2.0
    assert rest.retry is not None
    assert (rest.retry.attempts, rest.retry.per_try_timeout) == (3, 0.5)
    assert rest.retry.retry_on == {model.RetryOn.FIVE_XX, model.RetryOn.GATEWAY_ERROR}
    assert rest.mirrors == (model.Mirror(cluster=model.ClusterKey(hostname=RATINGS, port=90)),)
    assert rest.request_headers == model.HeaderOps(add=(("x-canary", "yes"),), remove=("x-debug",))
    assert any("no-such-thing" in w for w in snapshot.warnings)


def test_a_host_bound_to_a_virtual_service_with_no_matching_route_answers_404() -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings]
  http: [{match: [{uri: {prefix: /only}}], route: [{destination: {host: ratings}}]}]
"""
    decision = _route(_translate(vs), RATINGS, 80, "/elsewhere")
    assert isinstance(decision, LocalReply) and decision.status == 404


@pytest.mark.parametrize(
    ("gateways", "bound"),
    [("[]", True), ("[mesh]", True), ("[mesh, ingress]", True), ("[ingress]", False)],
)
def test_only_mesh_virtual_services_bind_to_the_waypoint(gateways: str, bound: bool) -> None:
    vs = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: prod}}
spec:
  hosts: [ratings]
  gateways: {gateways}
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
"""
    decision = _route(_translate(vs), RATINGS, 80)
    assert isinstance(decision, Forward)
    assert (decision.cluster.hostname == REVIEWS) is bound


def test_match_port_limits_a_route_to_that_ports_table() -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings.prod]
  http:
    - {match: [{port: 90}], route: [{destination: {host: reviews, port: {number: 9080}}}]}
    - route: [{destination: {host: ratings}}]
"""
    snapshot = _translate(vs)
    on_90, on_80 = _route(snapshot, RATINGS, 90), _route(snapshot, RATINGS, 80)
    assert isinstance(on_90, Forward) and on_90.cluster == model.ClusterKey(hostname=REVIEWS, port=9080)
    assert isinstance(on_80, Forward) and on_80.cluster == model.ClusterKey(hostname=RATINGS, port=80)


def test_short_hosts_resolve_against_the_virtual_services_own_namespace() -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: other}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
"""
    decision = _route(_translate(vs), RATINGS, 80)
    assert isinstance(decision, Forward)
    assert decision.cluster.hostname == "reviews.other.svc.cluster.local"  # not prod's reviews


def test_a_route_to_an_undefined_subset_is_a_cluster_without_endpoints_and_a_warning() -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v3}}]}]
"""
    snapshot = _translate(vs)
    cluster = snapshot.waypoints["prod/wp"].cluster(model.ClusterKey(hostname=REVIEWS, port=9080, subset="v3"))
    assert cluster is not None and cluster.endpoints == ()
    assert any("subset 'v3'" in w and "503" in w for w in snapshot.warnings)


GAMMA = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-split, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
    - backendRefs:
        - {name: reviews, port: 9080, weight: 9}
        - {name: ratings, port: 80, weight: 1}
    - matches: [{path: {type: Exact, value: /health}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-probe, value: "1"}]}
      backendRefs: [{name: ratings, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /api/v2}}]
      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
      backendRefs: [{name: ratings, port: 90}]
"""


def test_http_route_with_a_service_parent_gives_weighted_backend_refs() -> None:
    table = _translate(GAMMA).waypoints["prod/wp"].route_table(REVIEWS, 9080)
    assert table is not None
    split = [r for r in table.routes if r.name == "prod/reviews-split/0"]
    assert len(split) == 1 and isinstance(split[0].action, model.WeightedDestinations)
    assert [(d.cluster, d.weight) for d in split[0].action.destinations] == [
        (model.ClusterKey(hostname=REVIEWS, port=9080), 9),
        (model.ClusterKey(hostname=RATINGS, port=80), 1),
    ]


@pytest.mark.parametrize(
    ("path", "cluster", "path_sent"),
    [
        ("/health", model.ClusterKey(hostname=RATINGS, port=80), "/health"),  # exact beats the catch-all
        ("/api/v2/items", model.ClusterKey(hostname=RATINGS, port=90), "/v2/items"),  # longer prefix next
        ("/api/v2x", None, None),  # PathPrefix matches whole segments only: the catch-all takes it
    ],
)
def test_http_route_rules_follow_gateway_api_match_precedence(
    path: str, cluster: model.ClusterKey | None, path_sent: str | None
) -> None:
    decision = _route(_translate(GAMMA), REVIEWS, 9080, path)
    assert isinstance(decision, Forward)
    if cluster is None:
        assert decision.route_name == "prod/reviews-split/0"
    else:
        assert (decision.cluster, decision.path) == (cluster, path_sent)


def test_an_http_route_wins_over_a_virtual_service_for_the_same_service_and_it_is_reported() -> None:
    snapshot = _translate(GAMMA + "---\n" + BOOKINFO)
    decision = _route(snapshot, REVIEWS, 9080, "/old")
    assert isinstance(decision, Forward)  # the VirtualService's redirect is not in force
    assert any("both HTTPRoutes and VirtualService" in w for w in snapshot.warnings)


def test_http_route_parent_port_limits_the_route_to_that_port() -> None:
    route = GAMMA.replace("name: reviews, port: 9080}]", "name: ratings, port: 90}]")
    snapshot = _translate(route)
    on_90, on_80 = _route(snapshot, RATINGS, 90, "/health"), _route(snapshot, RATINGS, 80, "/health")
    assert isinstance(on_90, Forward) and on_90.route_name == "prod/reviews-split/1"
    assert isinstance(on_80, Forward) and on_80.route_name == "default"


def test_a_route_the_waypoint_cannot_run_is_left_out_with_a_warning_and_the_rest_still_work() -> None:
    broken_regex = "headers: [{type: RegularExpression, name: x, value: '('}]"
    bad = GAMMA.replace("path: {type: Exact, value: /health}", broken_regex)
    snapshot = _translate(bad)
    assert any("HTTPRoute prod/reviews-split rules[1]" in w and "left out" in w for w in snapshot.warnings)
    decision = _route(snapshot, REVIEWS, 9080, "/api/v2/items")
    assert isinstance(decision, Forward) and decision.cluster == model.ClusterKey(hostname=RATINGS, port=90)
    vs = BOOKINFO.replace("redirectCode: 308", "redirectCode: 300")  # valid for the schema, not a redirect
    snapshot = _translate(vs)
    assert any("http[1]" in w and "left out" in w for w in snapshot.warnings)
    assert isinstance(_route(snapshot, REVIEWS, 9080, "/old"), Forward)  # falls through to "rest"


FILTERS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: ratings, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: new.example.com, statusCode: 301,
                            path: {type: ReplaceFullPath, replaceFullPath: /landing}}
    - matches: [{path: {type: PathPrefix, value: /full}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: internal, path: {type: ReplaceFullPath, replaceFullPath: /x}}
      backendRefs: [{name: ratings, port: 80}]
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served, value: waypoint}], remove: [server]}
        - type: RequestMirror
          requestMirror: {backendRef: {name: reviews, port: 9080}}
      backendRefs: [{name: ratings, port: 80}]
      timeouts: {request: 3s, backendRequest: 1s}
    - matches: [{headers: [{name: x-none, value: "1"}]}]
      backendRefs: [{name: ratings, port: 80, weight: 0}]
"""


@pytest.mark.parametrize(
    ("path", "headers", "check"),
    [
        ("/moved/a?q=1", (), lambda d: isinstance(d, LocalReply) and d.status == 301
         and ("location", "https://new.example.com/landing?q=1") in d.headers),
        ("/full/deep?q=1", (), lambda d: isinstance(d, Forward) and (d.path, d.authority) == ("/x?q=1", "internal")),
        ("/other", (), lambda d: isinstance(d, Forward) and d.timeout == 3.0 and d.retry is not None
         and d.retry.per_try_timeout == 1.0
         and d.mirrors[0].cluster == model.ClusterKey(hostname=REVIEWS, port=9080)
         and d.response_header_ops[-1].add == (("x-served", "waypoint"),)),
        ("/other", ((b"x-none", b"1"),), lambda d: isinstance(d, LocalReply) and d.status == 500),
    ],
)
def test_http_route_filters_translate_with_gateway_api_semantics(
    path: str, headers: tuple[tuple[bytes, bytes], ...], check: Callable[[Forward | LocalReply], bool]
) -> None:
    decision = _route(_translate(FILTERS), RATINGS, 80, path, headers=headers)
    assert check(decision), decision
