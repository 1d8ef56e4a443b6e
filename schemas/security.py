"""``security.istio.io`` AuthorizationPolicy and PeerAuthentication.

Only ALLOW and DENY actions exist here: AUDIT needs an audit sink and CUSTOM an external
authorizer, neither of which this mesh has, and silently treating them as something else would
change what a policy means — so they are rejected with "not supported".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar

import attrs

from schemas.common import LabelSelector, ObjectMeta, meta
from schemas.errors import MapKey, Problem

GROUP = "security.istio.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")


class Action(enum.StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


# A plain ClassVar would become an enum member; attaching afterwards keeps it out of the members.
Action.UNSUPPORTED_VALUES = {  # type: ignore[attr-defined]
    "AUDIT": "this mesh has no audit sink; use DENY or ALLOW",
    "CUSTOM": "this mesh has no external authorization provider; use DENY or ALLOW",
}


@attrs.frozen(kw_only=True)
class PolicyTargetReference:
    """Attaches a policy to a Service or Gateway (for waypoints) instead of selecting workloads."""

    group: str | None = None
    kind: str
    name: str
    namespace: str | None = None


@attrs.frozen(kw_only=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Operation:
    """Ports are strings, as in Istio's schema (``ports: ["8080"]``)."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RuleFrom:
    source: Source


@attrs.frozen(kw_only=True)
class RuleTo:
    operation: Operation


@attrs.frozen(kw_only=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Rule:
    """Matches when any ``from`` and any ``to`` and every ``when`` match (empty lists match all)."""

    from_: tuple[RuleFrom, ...] = ()
    to: tuple[RuleTo, ...] = ()
    when: tuple[Condition, ...] = ()


@attrs.frozen(kw_only=True)
class AuthorizationPolicySpec:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "provider": "CUSTOM actions with an external provider are not supported by this mesh",
    }

    selector: LabelSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] = ()
    action: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()


@attrs.frozen(kw_only=True)
class AuthorizationPolicy:
    KIND: ClassVar[str] = "AuthorizationPolicy"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="AuthorizationPolicy", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: AuthorizationPolicySpec = attrs.field(factory=AuthorizationPolicySpec)


class MTLSMode(enum.StrEnum):
    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@attrs.frozen(kw_only=True)
class PeerMTLS:
    mode: MTLSMode = MTLSMode.UNSET


@attrs.frozen(kw_only=True)
class PeerAuthenticationSpec:
    selector: LabelSelector | None = None
    mtls: PeerMTLS | None = None
    port_level_mtls: Mapping[int, PeerMTLS] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PeerAuthentication:
    KIND: ClassVar[str] = "PeerAuthentication"
    API_VERSIONS: ClassVar[tuple[str, ...]] = API_VERSIONS
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default=API_VERSIONS[0], metadata=meta(always=True))
    kind: str = attrs.field(default="PeerAuthentication", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: PeerAuthenticationSpec = attrs.field(factory=PeerAuthenticationSpec)


def check_authorization_policy(policy: AuthorizationPolicy) -> list[Problem]:
    spec = policy.spec
    out: list[Problem] = []
    if spec.selector is not None and (spec.target_refs or spec.target_ref is not None):
        out.append(Problem(path=("spec",), message="set selector or targetRefs, not both"))
    if spec.target_ref is not None and spec.target_refs:
        out.append(Problem(path=("spec",), message="set targetRef or targetRefs, not both"))
    for i, rule in enumerate(spec.rules):
        for j, to in enumerate(rule.to):
            for field, ports in (("ports", to.operation.ports), ("notPorts", to.operation.not_ports)):
                for k, port in enumerate(ports):
                    if not port.isdigit() or not 1 <= int(port) <= 65535:
                        path = ("spec", "rules", i, "to", j, "operation", field, k)
                        out.append(Problem(path=path, message=f'"{port}" is not a port number (1..65535)'))
    return out


def check_peer_authentication(policy: PeerAuthentication) -> list[Problem]:
    out: list[Problem] = []
    if policy.spec.port_level_mtls and policy.spec.selector is None:
        message = "portLevelMtls needs a workload selector (ports are workload ports)"
        out.append(Problem(path=("spec", "portLevelMtls"), message=message))
    for port in policy.spec.port_level_mtls:
        if not 1 <= port <= 65535:
            out.append(Problem(path=("spec", "portLevelMtls", MapKey(port)), message="port outside 1..65535"))
    return out
