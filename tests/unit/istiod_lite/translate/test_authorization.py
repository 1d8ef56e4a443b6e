"""AuthorizationPolicy → ztunnel Authorization: scope, selection, L4 translation, L7 fail-closed.

Behaviour is checked through a real ztunnel ``ProxyState`` + ``authz.evaluate`` fed with the pushed
JSON, so the tests pin what a connection experiences, not only the shape of the objects."""

from __future__ import annotations

import pytest

from istiod_lite.translate import MeshSnapshot, translate
from schemas.discovery import Action, Clause, Match, Rule, Scope, StringMatch
from tests.unit.istiod_lite.translate.helpers import load, pod, ztunnel_decides

UID = "Kubernetes//Pod/prod/api-0"
FOO = "spiffe://cluster.local/ns/foo/sa/client"
BAR = "spiffe://cluster.local/ns/bar/sa/client"


def _policy(name: str, namespace: str, spec: str) -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )


def _translate(*docs: str) -> MeshSnapshot:
    pods = [pod("api-0", labels={"app": "api"}), pod("web-0", "shop", "10.0.0.2", labels={"app": "api"})]
    return translate(load("---\n".join(docs)) if docs else [], pods)


@pytest.mark.parametrize(
    ("namespace", "spec", "scope"),
    [
        ("istio-system", "  action: DENY\n", Scope.GLOBAL),  # root namespace, no selector
        ("prod", "  action: DENY\n", Scope.NAMESPACE),
        ("prod", "  selector: {matchLabels: {app: api}}\n", Scope.WORKLOAD_SELECTOR),
    ],
)
def test_authorization_policy_scope_follows_istio(namespace: str, spec: str, scope: Scope) -> None:
    snapshot = _translate(_policy("p", namespace, spec))
    assert snapshot.authorizations[f"{namespace}/p"].scope is scope


def test_selector_policies_are_listed_on_matching_workloads_of_their_namespace_only() -> None:
    snapshot = _translate(_policy("p", "prod", "  selector: {matchLabels: {app: api}}\n"))
    assert snapshot.workloads[UID].authorization_policies == ("prod/p",)
    assert snapshot.workloads["Kubernetes//Pod/shop/web-0"].authorization_policies == ()


def test_a_root_namespace_selector_policy_applies_in_every_namespace() -> None:
    snapshot = _translate(_policy("p", "istio-system", "  selector: {matchLabels: {app: api}}\n"))
    assert snapshot.authorizations["istio-system/p"].scope is Scope.WORKLOAD_SELECTOR
    assert snapshot.workloads["Kubernetes//Pod/shop/web-0"].authorization_policies == ("istio-system/p",)


def test_target_refs_policies_are_for_the_waypoint_only_never_for_ztunnel() -> None:
    spec = (
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\n"
        "  action: DENY\n  rules: [{}]\n"
    )
    snapshot = _translate(_policy("p", "prod", spec))
    assert "prod/p" not in snapshot.authorizations
    assert ztunnel_decides(snapshot, UID, port=80)


def test_l4_fields_translate_to_matches() -> None:
    spec = """\
  selector: {matchLabels: {app: api}}
  rules:
    - from:
        - source: {principals: ["cluster.local/ns/foo/sa/*"], notNamespaces: [bar], ipBlocks: [10.0.0.0/8]}
      to:
        - operation: {ports: ["8080"]}
      when:
        - {key: destination.port, notValues: ["9090"]}
"""
    policy = _translate(_policy("p", "prod", spec)).authorizations["prod/p"]
    assert policy.action is Action.ALLOW
    assert policy.rules == (
        Rule(clauses=(
            Clause(matches=(Match(
                principals=(StringMatch(prefix="cluster.local/ns/foo/sa/"),),
                not_namespaces=(StringMatch(exact="bar"),),
                source_ips=("10.0.0.0/8",),
            ),)),
            Clause(matches=(Match(destination_ports=(8080,)),)),
            Clause(matches=(Match(not_destination_ports=(9090,)),)),
        )),
    )


@pytest.mark.parametrize(
    ("source", "port", "allowed"),
    [(FOO, 8080, True), (FOO, 9090, False), (BAR, 8080, False), (None, 8080, False)],
)
def test_allow_policy_admits_only_what_it_matches(source: str | None, port: int, allowed: bool) -> None:
    spec = """\
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {namespaces: [foo]}}], to: [{operation: {ports: ["8080"]}}]}]
"""
    assert ztunnel_decides(_translate(_policy("p", "prod", spec)), UID, port=port, source_identity=source) is allowed


L7_ALLOW = [
    "{to: [{operation: {methods: [GET]}}]}",
    "{to: [{operation: {paths: [/api/*]}}]}",
    "{to: [{operation: {hosts: [api.example.com]}}]}",
    "{from: [{source: {requestPrincipals: ['*']}}]}",
    "{when: [{key: 'request.headers[x-user]', values: [alice]}]}",
]


@pytest.mark.parametrize("rule", L7_ALLOW)
def test_l7_attributes_in_a_ztunnel_allow_rule_make_it_never_match_fail_closed(rule: str) -> None:
    spec = f"  selector: {{matchLabels: {{app: api}}}}\n  rules:\n    - {rule}\n"
    snapshot = _translate(_policy("p", "prod", spec))
    assert snapshot.authorizations["prod/p"].rules == ()  # an ALLOW with no rules allows nothing
    assert not ztunnel_decides(snapshot, UID, port=80, source_identity=FOO)
    assert any("prod/p rules[0]" in w and "never match" in w and "targetRefs" in w for w in snapshot.warnings)


def test_l7_allow_rule_is_dropped_but_the_policys_l4_rules_still_allow() -> None:
    spec = """\
  selector: {matchLabels: {app: api}}
  rules:
    - {from: [{source: {namespaces: [foo]}}], to: [{operation: {methods: [GET]}}]}
    - {from: [{source: {namespaces: [bar]}}]}
"""
    snapshot = _translate(_policy("p", "prod", spec))
    assert not ztunnel_decides(snapshot, UID, port=80, source_identity=FOO)
    assert ztunnel_decides(snapshot, UID, port=80, source_identity=BAR)


@pytest.mark.parametrize(
    ("rule", "source", "port", "allowed"),
    [
        # DENY from foo for GET: only "from foo" is enforced, so all of foo's traffic is denied
        ("{from: [{source: {namespaces: [foo]}}], to: [{operation: {methods: [GET]}}]}", FOO, 80, False),
        ("{from: [{source: {namespaces: [foo]}}], to: [{operation: {methods: [GET]}}]}", BAR, 80, True),
        # L7 and L4 in one operation: the port still counts
        ("{to: [{operation: {ports: ['9090'], paths: [/admin]}}]}", BAR, 9090, False),
        ("{to: [{operation: {ports: ['9090'], paths: [/admin]}}]}", BAR, 80, True),
        # only L7 left: the rule denies everything
        ("{when: [{key: 'request.auth.claims[iss]', values: [x]}]}", BAR, 80, False),
    ],
)
def test_l7_attributes_in_a_deny_rule_leave_only_the_l4_part_enforced(
    rule: str, source: str, port: int, allowed: bool
) -> None:
    spec = f"  selector: {{matchLabels: {{app: api}}}}\n  action: DENY\n  rules:\n    - {rule}\n"
    snapshot = _translate(_policy("p", "prod", spec))
    assert ztunnel_decides(snapshot, UID, port=port, source_identity=source) is allowed
    assert any("only the L4 part" in w for w in snapshot.warnings)


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        ("  selector: {matchLabels: {app: api}}\n", False),  # ALLOW with no rules: deny all
        ("  selector: {matchLabels: {app: api}}\n  rules: [{}]\n", True),  # one empty rule: allow all
        ("  selector: {matchLabels: {app: api}}\n  action: DENY\n", True),  # DENY with no rules: nothing
        ("  selector: {matchLabels: {app: api}}\n  action: DENY\n  rules: [{}]\n", False),
    ],
)
def test_empty_policies_mean_what_they_mean_in_istio(spec: str, allowed: bool) -> None:
    assert ztunnel_decides(_translate(_policy("p", "prod", spec)), UID, port=80, source_identity=FOO) is allowed


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("*", StringMatch(presence=True)),
        ("cluster.local/ns/foo/*", StringMatch(prefix="cluster.local/ns/foo/")),
        ("*/sa/client", StringMatch(suffix="/sa/client")),
        ("spiffe://cluster.local/ns/foo/sa/x", StringMatch(exact="cluster.local/ns/foo/sa/x")),
    ],
)
def test_principal_strings_become_istio_string_matches(value: str, match: StringMatch) -> None:
    spec = (
        "  selector: {matchLabels: {app: api}}\n"
        f"  rules: [{{from: [{{source: {{principals: ['{value}']}}}}]}}]\n"
    )
    policy = _translate(_policy("p", "prod", spec)).authorizations["prod/p"]
    assert policy.rules[0].clauses[0].matches[0].principals == (match,)


@pytest.mark.parametrize(("action", "allowed"), [("ALLOW", False), ("DENY", False)])
def test_a_rule_that_cannot_be_translated_fails_closed(action: str, allowed: bool) -> None:
    spec = (
        f"  selector: {{matchLabels: {{app: api}}}}\n  action: {action}\n"
        "  rules: [{from: [{source: {ipBlocks: [not-an-address]}}]}]\n"
    )
    snapshot = _translate(_policy("p", "prod", spec))
    assert ztunnel_decides(snapshot, UID, port=80, source_identity=FOO) is allowed
    assert any("not-an-address" in w and "fail closed" in w for w in snapshot.warnings)
