"""L7 authorization at the waypoint: each case pins a documented Istio AuthorizationPolicy behaviour."""

from __future__ import annotations

import pytest

from waypoint.authz import (
    DENIED_BODY,
    DENIED_STATUS,
    Action,
    Condition,
    L7Policy,
    Operation,
    RequestAttributes,
    Rule,
    Source,
    evaluate,
    value_matches,
)
from waypoint.model import WaypointConfigError

SVC = "search-api.prod.svc.cluster.local"


def request(path: str = "/api/items", method: str = "GET", principal: str | None =
            "spiffe://cluster.local/ns/prod/sa/web", host: str = "search-api.prod.svc.cluster.local:8080",
            port: int = 8080, source_ip: str = "10.1.0.5", headers: dict[str, str] | None = None,
            service: str = SVC) -> RequestAttributes:
    return RequestAttributes(service=service, host=host, port=port, method=method, path=path,
                             source_ip=source_ip, source_principal=principal, headers=headers or {})


def allow(*rules: Rule, name: str = "allow", targets: frozenset[str] = frozenset()) -> L7Policy:
    return L7Policy(name=name, namespace="prod", action=Action.ALLOW, rules=rules, targets=targets)


def deny(*rules: Rule, name: str = "deny") -> L7Policy:
    return L7Policy(name=name, namespace="prod", action=Action.DENY, rules=rules)


def to(**kw: object) -> Rule:
    return Rule(operations=(Operation(**kw),))  # type: ignore[arg-type]


def frm(**kw: object) -> Rule:
    return Rule(sources=(Source(**kw),))  # type: ignore[arg-type]


VALUE_CASES = [
    ("exact", "/api", "/api", True),
    ("exact-no-prefix-semantics", "/api", "/api/x", False),
    ("prefix-star", "/api/*", "/api/items", True),
    ("prefix-star-needs-the-slash", "/api/*", "/api", False),
    ("suffix-star", "*.png", "/img/logo.png", True),
    ("star-matches-any-nonempty", "*", "anything", True),
    ("star-needs-presence", "*", None, False),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), [c[1:] for c in VALUE_CASES],
                         ids=[c[0] for c in VALUE_CASES])
def test_istio_string_forms(pattern: str, value: str | None, expected: bool) -> None:
    assert value_matches(pattern, value) is expected


CASES = [
    # (id, request, policies, allowed, deciding policy)
    ("no-policies-allow", request(), [], True, None),
    ("deny-only-non-matching-allows", request(), [deny(to(methods=("DELETE",)))], True, None),
    ("deny-method", request(method="DELETE"), [deny(to(methods=("DELETE",)))], False, "prod/deny"),
    ("deny-before-allow", request(method="DELETE"),
     [allow(Rule()), deny(to(methods=("DELETE",)))], False, "prod/deny"),
    ("allow-path-prefix", request("/api/items?x=1"), [allow(to(paths=("/api/*",)))], True, "prod/allow"),
    ("allow-present-none-match-denies", request("/admin"), [allow(to(paths=("/api/*",)))], False, None),
    ("paths-compare-without-query", request("/health?verbose"), [allow(to(paths=("/health",)))], True,
     "prod/allow"),
    ("dot-segments-cannot-dodge-a-deny", request("/api/%2e%2e/admin/users"),
     [deny(to(paths=("/admin/*",)))], False, "prod/deny"),
    ("notPaths", request("/admin"), [allow(to(not_paths=("/admin",)))], False, None),
    ("principal-without-spiffe-prefix", request(),
     [allow(frm(principals=("cluster.local/ns/prod/sa/web",)))], True, "prod/allow"),
    ("principal-prefix-form", request(), [allow(frm(principals=("cluster.local/ns/prod/*",)))], True,
     "prod/allow"),
    ("no-principal-fails-principals", request(principal=None), [allow(frm(principals=("*",)))], False, None),
    ("namespaces", request(principal="spiffe://cluster.local/ns/dev/sa/x"),
     [allow(frm(namespaces=("prod",)))], False, None),
    ("notNamespaces", request(), [deny(frm(not_namespaces=("prod",)))], True, None),
    ("ipBlocks", request(source_ip="10.1.0.5"), [allow(frm(ip_blocks=("10.1.0.0/16",)))], True, "prod/allow"),
    ("hosts-case-insensitive-and-port-agnostic", request(host="Search-API.prod.svc.cluster.local:8080"),
     [allow(to(hosts=("search-api.prod.svc.cluster.local",)))], True, "prod/allow"),
    ("hosts-wildcard-prefix", request(), [allow(to(hosts=("*.svc.cluster.local",)))], True, "prod/allow"),
    ("notHosts", request(), [deny(to(not_hosts=("other.example.com",)))], False, "prod/deny"),
    ("ports", request(port=9090), [allow(to(ports=(8080,)))], False, None),
    ("notPorts", request(port=9090), [deny(to(not_ports=(8080,)))], False, "prod/deny"),
    ("operations-are-ored", request(method="POST"),
     [allow(Rule(operations=(Operation(methods=("GET",)), Operation(methods=("POST",)))))],
     True, "prod/allow"),
    ("fields-in-an-operation-are-anded", request(method="POST", path="/api/x"),
     [allow(to(methods=("GET",), paths=("/api/*",)))], False, None),
    ("from-and-to-both-required", request(principal="spiffe://cluster.local/ns/dev/sa/x"),
     [allow(Rule(sources=(Source(namespaces=("prod",)),), operations=(Operation(methods=("GET",)),)))],
     False, None),
    ("when-request-header", request(headers={"x-tenant": "acme"}),
     [allow(Rule(conditions=(Condition(key="request.headers[X-Tenant]", values=("acme",)),)))], True,
     "prod/allow"),
    ("when-notValues", request(headers={"x-tenant": "evil"}),
     [allow(Rule(conditions=(Condition(key="request.headers[x-tenant]", not_values=("evil",)),)))], False,
     None),
    ("when-source-ip", request(),
     [deny(Rule(conditions=(Condition(key="source.ip", values=("10.1.0.0/24",)),)))],
     False, "prod/deny"),
    ("allow-without-rules-denies-all", request(), [allow()], False, None),
    ("deny-without-rules-matches-nothing", request(), [deny()], True, None),
    ("empty-rule-allows-all", request(principal=None), [allow(Rule())], True, "prod/allow"),
    ("policy-targeting-another-service-does-not-apply", request(),
     [allow(to(paths=("/nothing",)), targets=frozenset({"other.prod.svc.cluster.local"}))], True, None),
    ("policy-targeting-this-service-applies", request(),
     [allow(to(paths=("/nothing",)), targets=frozenset({SVC}))], False, None),
]


@pytest.mark.parametrize(("req", "policies", "allowed", "policy"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_authorization(
    req: RequestAttributes, policies: list[L7Policy], allowed: bool, policy: str | None
) -> None:
    decision = evaluate(req, policies)
    assert (decision.allowed, decision.policy) == (allowed, policy), decision.reason


def test_denial_is_envoy_rbac_403_naming_the_policy() -> None:
    decision = evaluate(request(method="DELETE"), [deny(to(methods=("DELETE",)), name="no-delete")])
    assert (DENIED_STATUS, DENIED_BODY) == (403, "RBAC: access denied")
    assert decision.details == "rbac_access_denied_matched_policy[prod/no-delete]"
    assert evaluate(request(), [allow()]).details == "rbac_access_denied_matched_policy[none]"


@pytest.mark.parametrize("bad", [
    lambda: Source(),
    lambda: Operation(),
    lambda: Source(ip_blocks=("10.0.0.0/33",)),
    lambda: Condition(key="request.auth.claims[iss]", values=("x",)),
    lambda: Condition(key="source.ip"),
], ids=["empty-source", "empty-operation", "bad-cidr", "unsupported-key", "condition-without-values"])
def test_invalid_policy_parts_are_rejected_with_a_hint(bad: object) -> None:
    with pytest.raises(WaypointConfigError) as info:
        bad()  # type: ignore[operator]
    assert "hint" in str(info.value)


def test_attributes_from_a_proxied_message() -> None:
    from waypoint.messages import Request

    message = Request(method=b"POST", path=b"/admin/x?y", authority=b"search-api:8080",
                      headers=[(b"X-Tenant", b"a"), (b"x-tenant", b"b")])
    attributes = RequestAttributes.from_message(message, service=SVC, port=8080, source_ip="10.0.0.1",
                                                source_principal="spiffe://cluster.local/ns/prod/sa/web")
    assert attributes.headers == {"x-tenant": "a,b"} and attributes.source_namespace == "prod"
    decision = evaluate(attributes, [deny(to(paths=("/admin/*",), methods=("POST",)), name="no-admin")])
    assert not decision.allowed and decision.policy == "prod/no-admin"
