"""AuthorizationPolicy with targetRefs → the waypoint's L7Policy, evaluated with the waypoint's own
``waypoint.authz.evaluate``."""

from __future__ import annotations

import pytest

from istiod_lite.translate import MeshSnapshot, translate
from tests.unit.istiod_lite.translate.helpers import load, pod
from waypoint.authz import RequestAttributes, evaluate

NS = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/use-waypoint: wp}}
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
metadata: {name: api, namespace: prod}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"""
API = "api.prod.svc.cluster.local"
WEB = "web.prod.svc.cluster.local"
FOO = "spiffe://cluster.local/ns/foo/sa/client"


def _policy(target: str, rules: str, action: str = "ALLOW", namespace: str = "prod") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p, namespace: {namespace}}}
spec:
  targetRefs: [{target}]
  action: {action}
  rules: {rules}
"""


def _translate(policy: str) -> MeshSnapshot:
    return translate(load(NS + "---\n" + policy), [pod("api-0", labels={"app": "api"})])


def _allowed(snapshot: MeshSnapshot, service: str, method: str = "GET", path: str = "/",
             principal: str | None = FOO, headers: dict[str, str] | None = None) -> bool:
    request = RequestAttributes(service=service, host=f"{service}:80", port=80, method=method, path=path,
                                source_ip="10.0.0.5", source_principal=principal, headers=headers or {})
    return evaluate(request, snapshot.waypoints["prod/wp"].policies).allowed


GATEWAY = "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}"
SERVICE = "{kind: Service, group: '', name: api}"


@pytest.mark.parametrize(
    ("target", "namespace", "api_denied", "web_denied"),
    [
        (GATEWAY, "prod", True, True),  # the Gateway: every service behind the waypoint
        (SERVICE, "prod", True, False),  # a Service: that service only
        ("{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}", "istio-system", True, True),
        ("{kind: Gateway, group: gateway.networking.k8s.io, name: other}", "prod", False, False),
    ],
)
def test_target_refs_attach_policy_to_the_waypoint_or_one_of_its_services(
    target: str, namespace: str, api_denied: bool, web_denied: bool
) -> None:
    snapshot = _translate(_policy(target, "[{to: [{operation: {methods: [DELETE]}}]}]", "DENY", namespace))
    assert _allowed(snapshot, API, "DELETE") is not api_denied
    assert _allowed(snapshot, WEB, "DELETE") is not web_denied
    assert _allowed(snapshot, API, "GET")


def test_l7_rules_are_enforced_at_the_waypoint() -> None:
    rules = """[{from: [{source: {namespaces: [foo]}}],
           to: [{operation: {methods: [GET], paths: [/api/*]}}],
           when: [{key: 'request.headers[x-team]', values: [search]}]}]"""
    snapshot = _translate(_policy(SERVICE, rules))
    assert _allowed(snapshot, API, path="/api/items", headers={"x-team": "search"})
    assert not _allowed(snapshot, API, path="/admin", headers={"x-team": "search"})
    assert not _allowed(snapshot, API, path="/api/items", headers={"x-team": "ads"})
    assert not _allowed(snapshot, API, path="/api/items", headers={"x-team": "search"},
                        principal="spiffe://cluster.local/ns/bar/sa/x")


def test_request_principals_never_match_without_jwt_support_so_allow_fails_closed() -> None:
    snapshot = _translate(_policy(SERVICE, "[{from: [{source: {requestPrincipals: ['*']}}]}]"))
    assert not _allowed(snapshot, API)
    assert any("requestPrincipals" in w for w in snapshot.warnings)


@pytest.mark.parametrize(("action", "allowed"), [("ALLOW", False), ("DENY", False)])
def test_unsupported_when_keys_fail_closed(action: str, allowed: bool) -> None:
    rules = "[{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]"
    snapshot = _translate(_policy(SERVICE, rules, action))
    assert _allowed(snapshot, API) is allowed
    assert any("request.auth.claims[iss]" in w for w in snapshot.warnings)


def test_a_waypoint_rule_that_cannot_be_translated_fails_closed() -> None:
    rules = "[{from: [{source: {ipBlocks: [not-an-address]}}]}]"
    snapshot = _translate(_policy(SERVICE, rules, "DENY"))
    assert not _allowed(snapshot, API)
    assert any("not-an-address" in w and "fail closed" in w for w in snapshot.warnings)
