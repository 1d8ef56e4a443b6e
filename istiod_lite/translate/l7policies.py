"""AuthorizationPolicies with ``targetRefs`` → the waypoint's :class:`~waypoint.authz.L7Policy` s.

A policy attaches to a waypoint when a targetRef names the waypoint's Gateway (every service behind
it), the ``istio-waypoint`` GatewayClass from the root namespace (every waypoint), or a Service the
waypoint serves (that service only). The waypoint sees L7, so methods/paths/hosts/headers are kept;
what it cannot see here is a JWT (no RequestAuthentication in this mesh), so — failing closed — a
``requestPrincipals`` source can never match (an ALLOW rule that needs it is dropped), while
``notRequestPrincipals`` always holds. ``remoteIpBlocks`` is checked against the connection's source
address (no trusted X-Forwarded-For here). ``when`` keys the waypoint does not evaluate make an ALLOW
rule never match and are ignored in a DENY rule (denying more), each with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping

from istiod_lite.translate.authorization import has_target_refs, unusable_rule
from istiod_lite.translate.inputs import WAYPOINT_CLASS, Inventory, service_hostname
from istiod_lite.translate.waypoints import Waypoint
from meshcore.errors import MeshError
from schemas import security
from schemas.common import namespace_of
from waypoint import authz

GATEWAY_GROUP = "gateway.networking.k8s.io"
_WAYPOINT_KEYS = ("source.ip", "source.namespace", "source.principal", "destination.port")


def _refs(policy: security.AuthorizationPolicy) -> tuple[security.PolicyTargetReference, ...]:
    ref = policy.spec.target_ref
    return policy.spec.target_refs or ((ref,) if ref is not None else ())


def targets_for(
    policy: security.AuthorizationPolicy, waypoint: Waypoint, served: Mapping[str, str], inventory: Inventory
) -> frozenset[str] | None:
    """The ``targets`` of the L7Policy for ``waypoint`` (empty: the whole waypoint), None if unrelated.

    ``served`` maps ``namespace/name`` of each Service the waypoint serves to its hostname."""
    namespace = namespace_of(policy.metadata)
    hosts: set[str] = set()
    for ref in _refs(policy):
        group = ref.group or ""
        ref_namespace = ref.namespace or namespace
        if ref.kind == "Gateway" and group in (GATEWAY_GROUP, "") and ref_namespace == waypoint.namespace:
            if ref.name == waypoint.name:
                return frozenset()
        elif ref.kind == "GatewayClass" and ref.name == WAYPOINT_CLASS and namespace == inventory.root_namespace:
            return frozenset()
        elif ref.kind == "Service" and group == "":
            key = f"{ref_namespace}/{ref.name}"
            if key in served:
                hosts.add(served[key])
    return frozenset(hosts) if hosts else None


def _source(source: security.Source, where: str, warnings: list[str]) -> authz.Source | bool | None:
    """The waypoint source; False when it can never match, None when it matches everything."""
    if source.request_principals:
        warnings.append(
            f"{where}: requestPrincipals need a JWT, which this mesh does not validate; this source never matches"
        )
        return False
    fields = {
        "principals": tuple(p.removeprefix("spiffe://") for p in source.principals),
        "not_principals": tuple(p.removeprefix("spiffe://") for p in source.not_principals),
        "namespaces": source.namespaces,
        "not_namespaces": source.not_namespaces,
        "ip_blocks": source.ip_blocks + source.remote_ip_blocks,
        "not_ip_blocks": source.not_ip_blocks + source.not_remote_ip_blocks,
    }
    if not any(fields.values()):
        return None
    return authz.Source(**fields)


def _operation(operation: security.Operation) -> authz.Operation | None:
    ports = tuple(int(p) for p in operation.ports if p.isdigit())
    not_ports = tuple(int(p) for p in operation.not_ports if p.isdigit())
    texts = (operation.hosts, operation.not_hosts, operation.methods, operation.not_methods,
             operation.paths, operation.not_paths)
    if not ports and not not_ports and not any(texts):
        return None
    return authz.Operation(
        hosts=operation.hosts,
        not_hosts=operation.not_hosts,
        ports=ports,
        not_ports=not_ports,
        methods=operation.methods,
        not_methods=operation.not_methods,
        paths=operation.paths,
        not_paths=operation.not_paths,
    )


def convert_rule(rule: security.Rule, action: security.Action, where: str, warnings: list[str]) -> authz.Rule | None:
    """None when the rule can never match at the waypoint."""
    sources: list[authz.Source] = []
    match_all_sources = False
    for source in (f.source for f in rule.from_):
        converted = _source(source, where, warnings)
        if converted is None:
            match_all_sources = True
        elif converted is not False:
            assert isinstance(converted, authz.Source)
            sources.append(converted)
    if rule.from_ and not match_all_sources and not sources:
        return None
    operations = [o for o in (_operation(t.operation) for t in rule.to) if o is not None]
    match_all_operations = len(operations) < len(rule.to)
    conditions: list[authz.Condition] = []
    for condition in rule.when:
        key = condition.key
        if key in _WAYPOINT_KEYS or (key.startswith("request.headers[") and key.endswith("]")):
            conditions.append(authz.Condition(key=key, values=condition.values, not_values=condition.not_values))
        elif action is security.Action.ALLOW:
            warnings.append(f"{where}: the waypoint cannot evaluate when[{key}]; this ALLOW rule never matches")
            return None
        else:
            warnings.append(
                f"{where}: the waypoint cannot evaluate when[{key}]; it is ignored, so this DENY "
                "rule denies more than written"
            )
    return authz.Rule(
        sources=() if match_all_sources else tuple(sources),
        operations=() if match_all_operations else tuple(operations),
        conditions=tuple(conditions),
    )


def convert(
    policy: security.AuthorizationPolicy,
    waypoint: Waypoint,
    served: Mapping[str, str],
    inventory: Inventory,
    warnings: list[str],
) -> authz.L7Policy | None:
    if not has_target_refs(policy):
        return None
    targets = targets_for(policy, waypoint, served, inventory)
    if targets is None:
        return None
    namespace, name = namespace_of(policy.metadata), policy.metadata.name
    rules = []
    for index, rule in enumerate(policy.spec.rules):
        where = f"AuthorizationPolicy {namespace}/{name} rules[{index}]"
        try:
            converted = convert_rule(rule, policy.spec.action, where, warnings)
        except MeshError as exc:  # e.g. a malformed ipBlock, a condition without values
            l4 = unusable_rule(policy.spec.action, where, exc.message, warnings)
            converted = None if l4 is None else authz.Rule()
        if converted is not None:
            rules.append(converted)
    return authz.L7Policy(
        name=name,
        namespace=namespace,
        action=authz.Action(policy.spec.action.value),
        rules=tuple(rules),
        targets=targets,
    )


def served_services(inventory: Inventory, keys: set[str]) -> dict[str, str]:
    """``namespace/name`` → hostname for the given Service keys."""
    out = {}
    for key in keys:
        namespace, _, name = key.partition("/")
        out[key] = service_hostname(name, namespace, inventory.cluster_domain)
    return out
