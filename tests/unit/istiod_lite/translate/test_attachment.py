"""L7 configuration for a service no waypoint serves does nothing in ambient mode: it is reported."""

from __future__ import annotations

import pytest

from istiod_lite.translate import translate
from tests.unit.istiod_lite.translate.helpers import load

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: prod}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}]
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"""
POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: prod}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""
WAYPOINT = """\
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
"""


@pytest.mark.parametrize(("doc", "named"), [(ROUTE, "HTTPRoute prod/r"), (POLICY, "AuthorizationPolicy prod/p")])
def test_l7_config_for_a_service_without_a_waypoint_is_reported(doc: str, named: str) -> None:
    alone = translate(load(SERVICE + "---\n" + doc), [])
    assert any(named in w and "no waypoint serves" in w for w in alone.warnings)
    with_waypoint = translate(load(SERVICE + "---\n" + doc + "---\n" + WAYPOINT), [])
    assert not any("no waypoint serves" in w for w in with_waypoint.warnings)
