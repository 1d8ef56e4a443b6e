"""Invalid documents, each rejected with the exact field path and a message that says what is wrong.

Every case is one small but complete document; ``load_text`` must report an error at exactly the
expected path whose message contains the expected words, and must not accept the resource.
"""

from __future__ import annotations

import textwrap

import pytest

from meshcore.errors import MeshError
from schemas.converter import structure
from schemas.errors import StructureFailure, format_path
from schemas.load import load_text
from schemas.networking import DestinationRuleSpec

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: search-service
  namespace: prod
spec:
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: prod
spec:
"""
AP = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: policy
  namespace: prod
spec:
"""
PA = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: prod
spec:
"""
HR = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: prod
spec:
"""
GW = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: prod
spec:
"""
SVC = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: prod
spec:
"""
DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews
  namespace: prod
spec:
"""


def spec(head: str, body: str) -> str:
    return head + textwrap.indent(textwrap.dedent(body), "  ")


def vs_http(first_line: str) -> str:
    """A VirtualService whose only HTTP route starts with ``first_line`` and routes to host ``a``."""
    return spec(VS, f"hosts: [a]\nhttp:\n  - {first_line}\n    route: [{{destination: {{host: a}}}}]\n")


ROUTE = """\
hosts: [search]
http:
  - route:
      - destination: {host: search, subset: v1}
        weight: 95
      - destination: {host: search, subset: v2}
        weight: %s
"""

CONTAINERS = """\
selector: {matchLabels: {app: reviews}}
template:
  metadata: {labels: {app: reviews}}
  spec:
    containers:
"""

CASES: list[tuple[str, str, str, str]] = [
    # (id, document, path, words in the message)
    ("weight-string", spec(VS, ROUTE % '"5%"'), "spec.http[0].route[1].weight", 'expected integer, got "5%"'),
    ("weight-sum", spec(VS, ROUTE % "10"), "spec.http[0].route", "must sum to 100, got 95 + 10 = 105"),
    ("weight-range", spec(VS, ROUTE % "-5"), "spec.http[0].route[1].weight", "at least 0"),
    (
        "unknown-field-hint",
        spec(VS, "hosts: [a]\nhttp:\n  - route:\n      - destination: {host: a}\n        wieght: 100\n"),
        "spec.http[0].route[0].wieght",
        'unknown field (did you mean "weight"?)',
    ),
    ("hosts-missing", spec(VS, "http: []\n"), "spec.hosts", "required field missing"),
    ("hosts-empty", spec(VS, "hosts: []\n"), "spec.hosts", "at least 1 item"),
    ("hosts-not-list", spec(VS, "hosts: search\n"), "spec.hosts", 'expected a list, got "search"'),
    (
        "destination-host-missing",
        spec(VS, "hosts: [a]\nhttp:\n  - route:\n      - destination: {subset: v1}\n"),
        "spec.http[0].route[0].destination.host",
        "required field missing",
    ),
    (
        "timeout-bare-number",
        spec(VS, "hosts: [a]\nhttp:\n  - timeout: 5"),
        "spec.http[0].timeout",
        'expected a duration like "5s"',
    ),
    (
        "per-try-timeout-unit",
        vs_http("retries: {attempts: 2, perTryTimeout: 2 sec}"),
        "spec.http[0].retries.perTryTimeout",
        '"2 sec"',
    ),
    (
        "retry-attempts-type",
        vs_http("retries: {attempts: three}"),
        "spec.http[0].retries.attempts",
        'expected integer, got "three"',
    ),
    (
        "match-two-kinds",
        vs_http("match: [{uri: {exact: /a, prefix: /b}}]"),
        "spec.http[0].match[0].uri",
        "set only one of exact, prefix",
    ),
    (
        "header-match-typo",
        vs_http("match: [{headers: {end-user: {exat: jason}}}]"),
        'spec.http[0].match[0].headers["end-user"].exat',
        'did you mean "exact"?',
    ),
    (
        "bad-regex",
        vs_http("match: [{uri: {regex: '(unclosed'}}]"),
        "spec.http[0].match[0].uri.regex",
        "invalid regular expression",
    ),
    (
        "fault-percent-range",
        vs_http(
            "fault: {abort: {httpStatus: 503, percentage: {value: 150}}}\n"
            "    route: [{destination: {host: a}}]\n",
        ),
        "spec.http[0].fault.abort.percentage.value",
        "at most 100",
    ),
    (
        "abort-status-missing",
        spec(VS, "hosts: [a]\nhttp:\n  - fault: {abort: {percentage: {value: 5}}}"),
        "spec.http[0].fault.abort.httpStatus",
        "required field missing",
    ),
    (
        "delay-without-duration",
        vs_http("fault: {delay: {fixedDelay: soon}}"),
        "spec.http[0].fault.delay.fixedDelay",
        "expected a duration",
    ),
    (
        "route-or-redirect",
        spec(VS, "hosts: [a]\nhttp:\n  - timeout: 1s\n"),
        "spec.http[0]",
        "needs a route or a redirect",
    ),
    (
        "mirror-percentage-alone",
        spec(VS, "hosts: [a]\nhttp:\n  - mirrorPercentage: {value: 5}"),
        "spec.http[0].mirrorPercentage",
        "needs a mirror",
    ),
    (
        "port-range",
        spec(VS, "hosts: [a]\nhttp:\n  - route: [{destination: {host: a, port: {number: 70000}}}]\n"),
        "spec.http[0].route[0].destination.port.number",
        "at most 65535",
    ),
    (
        "tls-routes-unsupported",
        spec(VS, "hosts: [a]\ntls: []\n"),
        "spec.tls",
        "not supported",
    ),
    (
        "duplicate-subset",
        spec(DR, "host: reviews\nsubsets:\n  - {name: v1}\n  - {name: v1}\n"),
        "spec.subsets[1].name",
        'duplicate subset name "v1"',
    ),
    (
        "lb-enum",
        spec(DR, "host: reviews\ntrafficPolicy: {loadBalancer: {simple: ROUND_ROBBIN}}\n"),
        "spec.trafficPolicy.loadBalancer.simple",
        'did you mean "ROUND_ROBIN"?',
    ),
    (
        "consistent-hash-empty",
        spec(DR, "host: reviews\ntrafficPolicy: {loadBalancer: {consistentHash: {}}}\n"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "set one of httpHeaderName",
    ),
    (
        "port-level-settings",
        spec(DR, "host: reviews\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}\n"),
        "spec.trafficPolicy.portLevelSettings",
        "not supported: per-port traffic policies",
    ),
    (
        "delay-percent-deprecated",
        vs_http("fault: {delay: {percent: 10, fixedDelay: 1s}}"),
        "spec.http[0].fault.delay.percent",
        "use percentage: {value: N}",
    ),
    (
        "outlier-percent",
        spec(DR, "host: reviews\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}\n"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "at most 100",
    ),
    (
        "connection-pool-type",
        spec(DR, "host: reviews\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: lots}}}\n"),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "expected integer",
    ),
    ("audit-unsupported", spec(AP, "action: AUDIT\n"), "spec.action", '"AUDIT" is not supported'),
    ("custom-unsupported", spec(AP, "action: CUSTOM\n"), "spec.action", '"CUSTOM" is not supported'),
    ("action-enum", spec(AP, "action: allow\n"), "spec.action", 'did you mean "ALLOW"?'),
    (
        "operation-port-int",
        spec(AP, "rules:\n  - to: [{operation: {ports: [8080]}}]\n"),
        "spec.rules[0].to[0].operation.ports[0]",
        "expected string, got 8080",
    ),
    (
        "source-typo",
        spec(AP, "rules:\n  - from: [{source: {principal: [a]}}]\n"),
        "spec.rules[0].from[0].source.principal",
        'did you mean "principals"?',
    ),
    (
        "selector-and-targetrefs",
        spec(AP, "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Service, name: a}]\n"),
        "spec",
        "not both",
    ),
    ("mtls-mode", spec(PA, "mtls: {mode: STRICTLY}\n"), "spec.mtls.mode", 'did you mean "STRICT"?'),
    (
        "port-level-needs-selector",
        spec(PA, "portLevelMtls:\n  8080: {mode: DISABLE}\n"),
        "spec.portLevelMtls",
        "needs a workload selector",
    ),
    (
        "port-level-key",
        spec(PA, "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  http: {mode: DISABLE}\n"),
        'spec.portLevelMtls["http"]',
        "expected integer key",
    ),
    (
        "backend-weight-type",
        spec(HR, "rules:\n  - backendRefs: [{name: a, port: 80, weight: heavy}]\n"),
        "spec.rules[0].backendRefs[0].weight",
        'expected integer, got "heavy"',
    ),
    (
        "backend-port-missing",
        spec(HR, "rules:\n  - backendRefs: [{name: reviews-v1, weight: 90}]\n"),
        "spec.rules[0].backendRefs[0].port",
        "a Service backend needs a port",
    ),
    (
        "filter-union",
        spec(HR, "rules:\n  - filters: [{type: URLRewrite, requestHeaderModifier: {remove: [x]}}]\n"),
        "spec.rules[0].filters[0].urlRewrite",
        "needs urlRewrite",
    ),
    (
        "path-type-enum",
        spec(HR, "rules:\n  - matches: [{path: {type: Prefix, value: /}}]\n"),
        "spec.rules[0].matches[0].path.type",
        "expected one of Exact, PathPrefix, RegularExpression",
    ),
    (
        "parent-name-missing",
        spec(HR, "parentRefs: [{kind: Service, group: ''}]\n"),
        "spec.parentRefs[0].name",
        "required field missing",
    ),
    (
        "route-timeout",
        spec(HR, "rules:\n  - timeouts: {request: 10}\n"),
        "spec.rules[0].timeouts.request",
        "expected a duration",
    ),
    (
        "gateway-listeners-empty",
        spec(GW, "gatewayClassName: istio-waypoint\nlisteners: []\n"),
        "spec.listeners",
        "at least 1 item",
    ),
    (
        "target-port-name",
        spec(SVC, "ports:\n  - {port: 80, targetPort: Not_A_Name}\n"),
        "spec.ports[0].targetPort",
        "neither a port number nor a port name",
    ),
    (
        "target-port-type",
        spec(SVC, "ports:\n  - {port: 80, targetPort: [80]}\n"),
        "spec.ports[0].targetPort",
        "expected integer or string, got a list",
    ),
    (
        "service-cluster-ip-case",
        spec(SVC, "clusterIp: 10.0.0.1\n"),
        "spec.clusterIp",
        'did you mean "clusterIP"?',
    ),
    (
        "deployment-selector-mismatch",
        spec(
            DEPLOY,
            "selector: {matchLabels: {app: other}}\ntemplate:\n  metadata: {labels: {app: reviews}}\n"
            "  spec: {containers: [{name: app}]}\n",
        ),
        "spec.selector.matchLabels",
        "does not match the template labels",
    ),
    (
        "container-command-string",
        spec(DEPLOY, CONTAINERS + "      - {name: app, command: python3 -m http.server}\n"),
        "spec.template.spec.containers[0].command",
        'expected a list, got "python3 -m http.server"',
    ),
    (
        "env-value-int",
        spec(DEPLOY, CONTAINERS + "      - {name: app, env: [{name: PORT, value: 8080}]}\n"),
        "spec.template.spec.containers[0].env[0].value",
        "expected string, got 8080",
    ),
    (
        "replicas-negative",
        spec(DEPLOY, "replicas: -1\n" + CONTAINERS + "      - {name: app}\n"),
        "spec.replicas",
        "at least 0",
    ),
    (
        "metadata-typo",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  lables: {istio.io/use-waypoint: w}\n",
        "metadata.lables",
        'did you mean "labels"?',
    ),
    (
        "label-value-bool",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels: {enabled: true}\n",
        'metadata.labels["enabled"]',
        "expected string, got true",
    ),
    (
        "name-not-dns",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: Search_Service, namespace: prod}\n",
        "metadata.name",
        '"Search_Service" is not a valid name (lowercase letters',
    ),
    (
        "listener-tls",
        spec(
            GW,
            "gatewayClassName: istio\nlisteners:\n  - {name: https, port: 443, protocol: HTTPS, tls: {}}\n",
        ),
        "spec.listeners[0].tls",
        "not supported: TLS termination",
    ),
    (
        "name-missing",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {namespace: prod}\n",
        "metadata.name",
        "required",
    ),
    (
        "api-version",
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a]}\n",
        "apiVersion",
        "networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3",
    ),
    (
        "unknown-kind",
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: a}\n",
        "kind",
        'did you mean "VirtualService"?',
    ),
]


@pytest.mark.parametrize(("document", "path", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_with_exact_path(document: str, path: str, words: str) -> None:
    result = load_text(document, "case.yaml")
    assert not result.ok
    assert result.resources == []
    matching = [e for e in result.errors if e.path == path]
    assert matching, f"no error at {path}; got: {[str(e) for e in result.errors]}"
    assert any(words in e.message for e in matching), [str(e) for e in matching]


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_issue_reads_exactly_like_the_example() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n" + spec(VS, ROUTE % '"5%"')
    result = load_text(text, "canary.yaml")
    assert [str(e) for e in result.errors] == [
        "canary.yaml: document 2 (VirtualService prod/search-service): spec.http[0].route[1].weight: "
        'expected integer, got "5%"'
    ]


def test_converter_failures_are_mesh_errors_with_paths() -> None:
    with pytest.raises(MeshError) as caught:
        structure({"host": "a", "subsets": [{"name": 3}]}, DestinationRuleSpec)
    assert isinstance(caught.value, StructureFailure)
    assert [format_path(p.path) for p in caught.value.problems] == ["subsets[0].name"]
    assert str(caught.value).startswith("subsets[0].name: expected string, got 3 (hint: ")


def test_every_error_in_a_document_is_reported() -> None:
    body = """\
    hostz: [a]
    http:
      - timeout: forever
        retries: {attempts: x}
        route:
          - destination: {host: a, subset: v1}
            weight: "50"
          - destination: {host: a, subst: v2}
    """
    result = load_text(spec(VS, body), "many.yaml")
    assert sorted(e.path for e in result.errors) == [
        "spec.hosts",
        "spec.hostz",
        "spec.http[0].retries.attempts",
        "spec.http[0].route[0].weight",
        "spec.http[0].route[1].destination.subst",
        "spec.http[0].timeout",
    ]
