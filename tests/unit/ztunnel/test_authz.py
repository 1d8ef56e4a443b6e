"""L4 authorization: each case pins one piece of Istio's documented AuthorizationPolicy behaviour."""

from __future__ import annotations

import pytest

from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, StringMatch
from ztunnel.authz import ConnectionInfo, Decision, Reason, evaluate

PROD_API = "spiffe://cluster.local/ns/prod/sa/api"
DEV_TOOL = "spiffe://cluster.local/ns/dev/sa/tool"


def conn(
    identity: str | None = PROD_API, src: str = "10.1.0.5", dst: str = "10.2.0.7", port: int = 8080
) -> ConnectionInfo:
    return ConnectionInfo(source_ip=src, destination_ip=dst, destination_port=port, source_identity=identity)


def policy(name: str, action: Action, *clauses: Clause, rules: tuple[Rule, ...] | None = None) -> Authorization:
    """One rule made of ``clauses`` (the usual from+to shape), unless ``rules`` is given."""
    return Authorization(
        name=name, namespace="prod", scope=Scope.WORKLOAD_SELECTOR, action=action,
        rules=rules if rules is not None else (Rule(clauses=clauses),),
    )


def clause(*matches: Match) -> Clause:
    return Clause(matches=matches)


def exact(value: str) -> StringMatch:
    return StringMatch(exact=value)


ALLOW_PROD_NS = policy("allow-prod", Action.ALLOW, clause(Match(namespaces=(exact("prod"),))))
DENY_DEV_NS = policy("deny-dev", Action.DENY, clause(Match(namespaces=(exact("dev"),))))
DENY_PORT_9090 = policy("deny-9090", Action.DENY, clause(Match(destination_ports=(9090,))))


CASES = [
    # (id, connection, policies, allowed, reason, deciding policy)
    ("no-policies-allow", conn(), [], True, Reason.NO_ALLOW_POLICY, None),
    ("only-non-matching-deny-allows", conn(), [DENY_DEV_NS], True, Reason.NO_ALLOW_POLICY, None),
    ("matching-deny-denies", conn(DEV_TOOL), [DENY_DEV_NS], False, Reason.DENY_MATCHED, "prod/deny-dev"),
    ("deny-wins-over-matching-allow",
     conn(port=9090), [ALLOW_PROD_NS, DENY_PORT_9090], False, Reason.DENY_MATCHED, "prod/deny-9090"),
    ("matching-allow-allows", conn(), [ALLOW_PROD_NS], True, Reason.ALLOW_MATCHED, "prod/allow-prod"),
    ("allow-present-but-none-match-denies", conn(DEV_TOOL), [ALLOW_PROD_NS], False, Reason.NO_ALLOW_MATCHED, None),
    ("any-of-several-allows-suffices",
     conn(DEV_TOOL), [ALLOW_PROD_NS, policy("allow-dev", Action.ALLOW, clause(Match(namespaces=(exact("dev"),))))],
     True, Reason.ALLOW_MATCHED, "prod/allow-dev"),
    ("allow-with-no-rules-denies-all (spec: {action: ALLOW})",
     conn(), [policy("allow-nothing", Action.ALLOW, rules=())], False, Reason.NO_ALLOW_MATCHED, None),
    ("deny-with-no-rules-matches-nothing",
     conn(), [policy("deny-nothing", Action.DENY, rules=())], True, Reason.NO_ALLOW_POLICY, None),
    ("empty-rule-matches-everything (rules: [{}])",
     conn(None), [policy("allow-all", Action.ALLOW, rules=(Rule(),))], True, Reason.ALLOW_MATCHED, "prod/allow-all"),
    ("principal-compared-without-spiffe-prefix",
     conn(), [policy("p", Action.ALLOW, clause(Match(principals=(exact("cluster.local/ns/prod/sa/api"),))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("principal-with-spiffe-prefix-does-not-match",
     conn(), [policy("p", Action.ALLOW, clause(Match(principals=(exact(PROD_API),))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("principal-prefix-match",
     conn(), [policy("p", Action.ALLOW, clause(Match(principals=(StringMatch(prefix="cluster.local/ns/prod/"),))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("principal-suffix-match",
     conn(), [policy("p", Action.ALLOW, clause(Match(principals=(StringMatch(suffix="/sa/api"),))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("principal-presence-needs-an-identity (PeerAuthentication STRICT as DENY not_principals *)",
     conn(None), [policy("strict", Action.DENY, clause(Match(not_principals=(StringMatch(presence=True),))))],
     False, Reason.DENY_MATCHED, "prod/strict"),
    ("strict-deny-lets-mtls-through",
     conn(), [policy("strict", Action.DENY, clause(Match(not_principals=(StringMatch(presence=True),))))],
     True, Reason.NO_ALLOW_POLICY, None),
    ("principals-never-match-plaintext",
     conn(None), [policy("p", Action.ALLOW, clause(Match(principals=(StringMatch(presence=True),))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("namespace-comes-from-source-identity",
     conn(DEV_TOOL, src="10.1.0.5"), [ALLOW_PROD_NS], False, Reason.NO_ALLOW_MATCHED, None),
    ("not-namespaces-excludes",
     conn(DEV_TOOL), [policy("p", Action.ALLOW, clause(Match(not_namespaces=(exact("dev"),))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("not-namespaces-admits-others",
     conn(), [policy("p", Action.ALLOW, clause(Match(not_namespaces=(exact("dev"),))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("source-ip-cidr (ipBlocks)",
     conn(src="10.1.0.5"), [policy("p", Action.ALLOW, clause(Match(source_ips=("10.1.0.0/16",))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("source-ip-bare-address-is-a-host-route",
     conn(src="10.1.0.6"), [policy("p", Action.ALLOW, clause(Match(source_ips=("10.1.0.5",))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("not-source-ips (notIpBlocks)",
     conn(src="10.1.0.5"), [policy("p", Action.DENY, clause(Match(not_source_ips=("10.1.0.0/16",))))],
     True, Reason.NO_ALLOW_POLICY, None),
    ("ipv6-source-never-in-ipv4-block",
     conn(src="fd00::5"), [policy("p", Action.ALLOW, clause(Match(source_ips=("0.0.0.0/0",))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("destination-ip-cidr",
     conn(dst="10.2.0.7"), [policy("p", Action.DENY, clause(Match(destination_ips=("10.2.0.0/24",))))],
     False, Reason.DENY_MATCHED, "prod/p"),
    ("not-destination-ports (ztunnel localhost example)",
     conn(port=9999), [policy("p", Action.ALLOW, clause(Match(not_destination_ports=(9999,))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("values-within-a-field-or",
     conn(port=8443), [policy("p", Action.ALLOW, clause(Match(destination_ports=(8080, 8443))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("fields-within-a-match-and",
     conn(DEV_TOOL, port=8080),
     [policy("p", Action.ALLOW, clause(Match(namespaces=(exact("prod"),), destination_ports=(8080,))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("matches-within-a-clause-or",
     conn(DEV_TOOL),
     [policy("p", Action.ALLOW, clause(Match(namespaces=(exact("prod"),)), Match(namespaces=(exact("dev"),))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("clauses-within-a-rule-and (from AND to)",
     conn(port=9090),
     [policy("p", Action.ALLOW, clause(Match(namespaces=(exact("prod"),))), clause(Match(destination_ports=(8080,))))],
     False, Reason.NO_ALLOW_MATCHED, None),
    ("rules-or",
     conn(port=9090),
     [policy("p", Action.ALLOW, rules=(
         Rule(clauses=(clause(Match(destination_ports=(8080,))),)),
         Rule(clauses=(clause(Match(destination_ports=(9090,))),)),
     ))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("empty-clause-matches (rule with empty from)",
     conn(), [policy("p", Action.ALLOW, Clause(), clause(Match(destination_ports=(8080,))))],
     True, Reason.ALLOW_MATCHED, "prod/p"),
    ("match-with-no-fields-matches-nothing",
     conn(), [policy("p", Action.ALLOW, clause(Match()))], False, Reason.NO_ALLOW_MATCHED, None),
]


@pytest.mark.parametrize(
    ("connection", "policies", "allowed", "reason", "decider"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_istio_authorization_semantics(
    connection: ConnectionInfo,
    policies: list[Authorization],
    allowed: bool,
    reason: Reason,
    decider: str | None,
) -> None:
    decision = evaluate(connection, policies)
    assert decision == Decision(allowed=allowed, reason=reason, policy=decider)


@pytest.mark.parametrize(
    ("identity", "principal", "namespace"),
    [
        (PROD_API, "cluster.local/ns/prod/sa/api", "prod"),
        ("spiffe://example.org/ns/dev/sa/x", "example.org/ns/dev/sa/x", "dev"),
        ("spiffe://cluster.local/some/other/shape", "cluster.local/some/other/shape", ""),
        ("https://not-spiffe", "", ""),
        (None, "", ""),
    ],
)
def test_principal_and_namespace_are_read_from_the_spiffe_id(
    identity: str | None, principal: str, namespace: str
) -> None:
    info = conn(identity)
    assert (info.principal, info.source_namespace) == (principal, namespace)


def test_decision_describes_itself_for_authz_check() -> None:
    denied = evaluate(conn(DEV_TOOL), [DENY_DEV_NS])
    assert denied.describe() == "deny: a DENY policy matched (prod/deny-dev)"
    assert evaluate(conn(), []).describe() == "allow: no ALLOW policy applies"
