"""AuthorizationPolicy → the L4 ``Authorization`` ztunnel enforces (Istio ambient ``authorization.go``).

Scope, as Istio decides it:

* ``targetRefs``/``targetRef`` — the policy is for a waypoint (:mod:`.l7policies`), never for ztunnel;
* no selector in the root namespace (``istio-system``) → GLOBAL, every workload of the mesh;
* no selector elsewhere → NAMESPACE, every workload of that namespace;
* a selector → WORKLOAD_SELECTOR, listed in ``authorization_policies`` of each matching workload of
  the policy's namespace (or of any namespace, for a root-namespace policy).

ztunnel sees only L4 attributes. What an L7 attribute (``methods``, ``paths``, ``hosts``,
``requestPrincipals``, ``remoteIpBlocks``, a ``when`` on ``request.*`` …) means at ztunnel is decided
to fail *closed*: inside an ALLOW rule it makes that rule never match (the rule is dropped; an ALLOW
policy left with no rules allows nothing), inside a DENY rule only the L4 part is enforced (the L7
condition is treated as always true, so the rule denies *more*). Each case is reported as a warning,
with the advice Istio gives: attach L7 policy to a waypoint with ``targetRefs``.
"""

from __future__ import annotations

from collections.abc import Sequence

from istiod_lite.translate.inputs import Inventory, PodInfo, labels_match
from schemas import security
from schemas.common import namespace_of
from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, StringMatch

L4_CONDITION_KEYS = ("source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port")
_ADVICE = "L7 attributes need a waypoint: attach the policy to it with targetRefs"


def has_target_refs(policy: security.AuthorizationPolicy) -> bool:
    return bool(policy.spec.target_refs) or policy.spec.target_ref is not None


def scope_of(policy: security.AuthorizationPolicy, root_namespace: str) -> Scope:
    if policy.spec.selector is not None and policy.spec.selector.match_labels:
        return Scope.WORKLOAD_SELECTOR
    if namespace_of(policy.metadata) == root_namespace:
        return Scope.GLOBAL
    return Scope.NAMESPACE


def selects(policy: security.AuthorizationPolicy, pod: PodInfo, root_namespace: str) -> bool:
    """Does this WORKLOAD_SELECTOR policy apply to ``pod``?"""
    selector = policy.spec.selector
    if has_target_refs(policy) or selector is None or not selector.match_labels:
        return False
    namespace = namespace_of(policy.metadata)
    return namespace in (pod.namespace, root_namespace) and labels_match(selector.match_labels, pod.labels)


def string_match(value: str) -> StringMatch:
    """Istio's policy strings: ``*`` any (non-empty), ``prefix*``, ``*suffix``, else exact."""
    if value == "*":
        return StringMatch(presence=True)
    if value.endswith("*"):
        return StringMatch(prefix=value[:-1])
    if value.startswith("*"):
        return StringMatch(suffix=value[1:])
    return StringMatch(exact=value)


def _principals(values: Sequence[str]) -> tuple[StringMatch, ...]:
    return tuple(string_match(v.removeprefix("spiffe://")) for v in values)


def _matches(values: Sequence[str]) -> tuple[StringMatch, ...]:
    return tuple(string_match(v) for v in values)


def _ports(values: Sequence[str], where: str, problems: list[str]) -> tuple[int, ...]:
    out = []
    for value in values:
        if value.isdigit() and 1 <= int(value) <= 65535:
            out.append(int(value))
        else:
            problems.append(f"{where}: {value!r} is not a port number")
    return tuple(out)


def _source_match(source: security.Source, l7: list[str]) -> Match:
    for name, values in (
        ("requestPrincipals", source.request_principals),
        ("notRequestPrincipals", source.not_request_principals),
        ("remoteIpBlocks", source.remote_ip_blocks),
        ("notRemoteIpBlocks", source.not_remote_ip_blocks),
    ):
        if values:
            l7.append(f"from.source.{name}")
    return Match(
        principals=_principals(source.principals),
        not_principals=_principals(source.not_principals),
        namespaces=_matches(source.namespaces),
        not_namespaces=_matches(source.not_namespaces),
        source_ips=source.ip_blocks,
        not_source_ips=source.not_ip_blocks,
    )


def _operation_match(operation: security.Operation, l7: list[str], problems: list[str]) -> Match:
    for name, values in (
        ("hosts", operation.hosts),
        ("notHosts", operation.not_hosts),
        ("methods", operation.methods),
        ("notMethods", operation.not_methods),
        ("paths", operation.paths),
        ("notPaths", operation.not_paths),
    ):
        if values:
            l7.append(f"to.operation.{name}")
    return Match(
        destination_ports=_ports(operation.ports, "to.operation.ports", problems),
        not_destination_ports=_ports(operation.not_ports, "to.operation.notPorts", problems),
    )


def _condition_match(condition: security.Condition, l7: list[str], problems: list[str]) -> Match | None:
    key, values, negated = condition.key, condition.values, condition.not_values
    if key not in L4_CONDITION_KEYS:
        l7.append(f"when[{key}]")
        return None
    if key == "source.ip":
        return Match(source_ips=values, not_source_ips=negated)
    if key == "destination.ip":
        return Match(destination_ips=values, not_destination_ips=negated)
    if key == "source.namespace":
        return Match(namespaces=_matches(values), not_namespaces=_matches(negated))
    if key == "source.principal":
        return Match(principals=_principals(values), not_principals=_principals(negated))
    return Match(
        destination_ports=_ports(values, "when[destination.port]", problems),
        not_destination_ports=_ports(negated, "when[destination.port]", problems),
    )


def _clause(matches: Sequence[Match]) -> Clause | None:
    """A clause ORs its matches; one that lost all its fields to L7 stripping matches anything, and a
    clause that matches anything constrains nothing — so it is left out (None)."""
    if any(m.is_empty() for m in matches):
        return None
    return Clause(matches=tuple(matches))


def convert_rule(rule: security.Rule, action: security.Action, where: str, warnings: list[str]) -> Rule | None:
    """One policy rule at L4, or None when an ALLOW rule can never match at ztunnel."""
    l7: list[str] = []
    problems: list[str] = []
    clauses: list[Clause | None] = []
    if rule.from_:
        clauses.append(_clause([_source_match(f.source, l7) for f in rule.from_]))
    if rule.to:
        clauses.append(_clause([_operation_match(t.operation, l7, problems) for t in rule.to]))
    for condition in rule.when:
        match = _condition_match(condition, l7, problems)
        if match is not None:
            clauses.append(_clause([match]))
    for problem in problems:
        warnings.append(f"{where}: {problem}; the value is ignored")
    if l7:
        attributes = ", ".join(dict.fromkeys(l7))
        if action is security.Action.ALLOW:
            warnings.append(
                f"{where}: ztunnel cannot check L7 attributes ({attributes}); this ALLOW rule will never "
                f"match (fail closed). {_ADVICE}"
            )
            return None
        warnings.append(
            f"{where}: ztunnel cannot check L7 attributes ({attributes}); only the L4 part of this DENY "
            f"rule is enforced, so it denies more than written. {_ADVICE}"
        )
    return Rule(clauses=tuple(c for c in clauses if c is not None))


def unusable_rule(action: security.Action, where: str, problem: str, warnings: list[str]) -> Rule | None:
    """A rule that cannot be translated fails closed: an ALLOW rule never matches (dropped), a DENY
    rule matches everything (denies all traffic the policy applies to)."""
    if action is security.Action.ALLOW:
        warnings.append(f"{where}: {problem}; this ALLOW rule will never match (fail closed)")
        return None
    warnings.append(f"{where}: {problem}; this DENY rule now denies all traffic it applies to (fail closed)")
    return Rule()


def convert(policy: security.AuthorizationPolicy, inventory: Inventory, warnings: list[str]) -> Authorization | None:
    """The ztunnel form of ``policy``; None for waypoint-only (``targetRefs``) policies."""
    if has_target_refs(policy):
        return None
    namespace = namespace_of(policy.metadata)
    name = policy.metadata.name
    action = policy.spec.action
    rules: list[Rule] = []
    for index, rule in enumerate(policy.spec.rules):
        where = f"AuthorizationPolicy {namespace}/{name} rules[{index}]"
        try:
            converted = convert_rule(rule, action, where, warnings)
        except ValueError as exc:  # a malformed ipBlock: the discovery types validate CIDRs
            converted = unusable_rule(action, where, str(exc), warnings)
        if converted is not None:
            rules.append(converted)
    return Authorization(
        name=name,
        namespace=namespace,
        scope=scope_of(policy, inventory.root_namespace),
        action=Action(action.value),
        rules=tuple(rules),
    )
