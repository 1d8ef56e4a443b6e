"""L7 AuthorizationPolicy evaluation at the waypoint: request attributes in, a decision out.

Istio's semantics (security.istio.io AuthorizationPolicy reference):

* Order: any matching DENY policy denies; if no ALLOW policy applies the request is allowed; otherwise
  it is allowed only if some ALLOW policy matches. A denial is ``403`` with body ``RBAC: access denied``
  (Envoy's RBAC filter; no response flag, the policy is named in the response code details).
* A policy matches if any rule does; a rule if its ``from``, ``to`` and ``when`` all hold; ``from`` /
  ``to`` hold if any listed source / operation does; a source or operation holds when every field it
  sets holds; a field holds if any of its values matches and none of its ``not`` values does;
  ``when`` conditions must all hold. ``rules: [{}]`` matches everything; a policy with no rules
  matches nothing (so an ALLOW policy without rules denies all).
* String values (principals, namespaces, methods, paths, hosts, header values) are exact, or
  ``prefix*``, ``*suffix``, or ``*`` (anything, but something must be there). Hosts compare
  case-insensitively, with or without the port of ``:authority``. Paths compare without the query,
  after Istio's default (``BASE``) normalization, so dot-segments cannot dodge a rule.
* ``targets``: an empty set means the policy targets the waypoint itself (``targetRefs`` to the
  Gateway: every service behind it); otherwise the service hostnames it targets.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from waypoint.headers import normalize_path, split_authority, split_path
from waypoint.messages import Request
from waypoint.model import WaypointConfigError

DENIED_STATUS = 403
DENIED_BODY = "RBAC: access denied"


class Action(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@attrs.frozen(kw_only=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not any(attrs.astuple(self, recurse=False)):
            raise WaypointConfigError("a policy source sets no field", field="rules.from.source")
        for cidr in (*self.ip_blocks, *self.not_ip_blocks):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise WaypointConfigError(f"bad ipBlock {cidr!r}: {exc}", field="ipBlocks") from exc


@attrs.frozen(kw_only=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not any(attrs.astuple(self, recurse=False)):
            raise WaypointConfigError("a policy operation sets no field", field="rules.to.operation")


SUPPORTED_CONDITION_KEYS = (
    "request.headers[<name>]", "source.ip", "source.namespace", "source.principal", "destination.port"
)


@attrs.frozen(kw_only=True)
class Condition:
    """A ``when`` entry; ``key`` is one of :data:`SUPPORTED_CONDITION_KEYS`."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not (self.key.startswith("request.headers[") and self.key.endswith("]")) and self.key not in (
            "source.ip", "source.namespace", "source.principal", "destination.port"
        ):
            raise WaypointConfigError(
                f"unsupported AuthorizationPolicy condition key {self.key!r}; "
                f"supported: {', '.join(SUPPORTED_CONDITION_KEYS)}",
                field="rules.when.key",
            )
        if not self.values and not self.not_values:
            raise WaypointConfigError(f"condition {self.key!r} needs values or notValues", field="rules.when")


@attrs.frozen(kw_only=True)
class Rule:
    sources: tuple[Source, ...] = ()  # ``from``
    operations: tuple[Operation, ...] = ()  # ``to``
    conditions: tuple[Condition, ...] = ()  # ``when``


@attrs.frozen(kw_only=True)
class L7Policy:
    name: str
    namespace: str
    action: Action
    rules: tuple[Rule, ...] = ()
    targets: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def applies_to(self, service: str) -> bool:
        return not self.targets or service in self.targets


@attrs.frozen(kw_only=True)
class RequestAttributes:
    """What L7 authorization may look at. ``source_principal`` may be a SPIFFE ID or Istio's
    ``td/ns/x/sa/y`` form; ``service`` is the destination service hostname (for ``targets``);
    ``headers`` maps lower-case names to their (comma-joined) values."""

    service: str
    host: str
    port: int
    method: str
    path: str
    source_ip: str
    source_principal: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)

    @classmethod
    def from_message(
        cls, request: Request, *, service: str, port: int, source_ip: str, source_principal: str | None
    ) -> RequestAttributes:
        """The authorization view of a proxied request; repeated headers are joined with ``,``."""
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        return cls(
            service=service,
            host=request.authority.decode("latin-1"),
            port=port,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            source_ip=source_ip,
            source_principal=source_principal,
            headers=headers,
        )

    @property
    def principal(self) -> str:
        if not self.source_principal:
            return ""
        return self.source_principal.removeprefix("spiffe://")

    @property
    def source_namespace(self) -> str:
        parts = self.principal.split("/")
        if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
            return parts[2]
        return ""


@attrs.frozen(kw_only=True)
class AuthzDecision:
    allowed: bool
    policy: str | None
    reason: str

    @property
    def details(self) -> str:
        """Envoy's response code details for a denial, naming the policy (``none`` if no single one)."""
        return f"rbac_access_denied_matched_policy[{self.policy or 'none'}]"


def evaluate(request: RequestAttributes, policies: Sequence[L7Policy]) -> AuthzDecision:
    """Istio's order: any matching DENY denies; no applicable ALLOW allows; else an ALLOW must match."""
    applicable = [p for p in policies if p.applies_to(request.service)]
    for policy in applicable:
        if policy.action is Action.DENY and policy_matches(policy, request):
            return AuthzDecision(allowed=False, policy=policy.key, reason="a DENY policy matched")
    allows = [p for p in applicable if p.action is Action.ALLOW]
    if not allows:
        return AuthzDecision(allowed=True, policy=None, reason="no ALLOW policy applies")
    for policy in allows:
        if policy_matches(policy, request):
            return AuthzDecision(allowed=True, policy=policy.key, reason="an ALLOW policy matched")
    return AuthzDecision(allowed=False, policy=None, reason="no ALLOW policy matched")


def policy_matches(policy: L7Policy, request: RequestAttributes) -> bool:
    return any(rule_matches(rule, request) for rule in policy.rules)


def rule_matches(rule: Rule, request: RequestAttributes) -> bool:
    if rule.sources and not any(source_matches(s, request) for s in rule.sources):
        return False
    if rule.operations and not any(operation_matches(o, request) for o in rule.operations):
        return False
    return all(condition_matches(c, request) for c in rule.conditions)


def value_matches(pattern: str, value: str | None) -> bool:
    """Istio's string forms: exact, ``prefix*``, ``*suffix``, ``*`` (any non-empty value)."""
    if value is None or value == "":
        return False
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _field(
    positive: Iterable[str],
    negative: Iterable[str],
    value: str | None,
    match: Callable[[str, str | None], bool] = value_matches,
) -> bool:
    positive, negative = tuple(positive), tuple(negative)
    if positive and not any(match(p, value) for p in positive):
        return False
    return not any(match(n, value) for n in negative)


def _ip_in(cidr: str, ip: str | None) -> bool:
    if not ip:
        return False
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(cidr, strict=False)
    return address.version == network.version and address in network


def _host_matches(pattern: str, authority: str | None) -> bool:
    if authority is None:
        return False
    host, _ = split_authority(authority.lower())
    pattern = pattern.lower()
    return value_matches(pattern, authority.lower()) or value_matches(pattern, host)


def source_matches(source: Source, request: RequestAttributes) -> bool:
    principal = request.principal or None
    namespace = request.source_namespace or None
    return (
        _field(source.principals, source.not_principals, principal)
        and _field(source.namespaces, source.not_namespaces, namespace)
        and _field(source.ip_blocks, source.not_ip_blocks, request.source_ip, _ip_in)
    )


def operation_matches(operation: Operation, request: RequestAttributes) -> bool:
    path, _ = split_path(normalize_path(request.path))  # idempotent if the shell normalized already
    port = str(request.port)
    return (
        _field(operation.hosts, operation.not_hosts, request.host, _host_matches)
        and _field(map(str, operation.ports), map(str, operation.not_ports), port)
        and _field(operation.methods, operation.not_methods, request.method)
        and _field(operation.paths, operation.not_paths, path)
    )


def condition_matches(condition: Condition, request: RequestAttributes) -> bool:
    key = condition.key
    match: Callable[[str, str | None], bool] = value_matches
    value: str | None
    if key.startswith("request.headers["):
        value = request.headers.get(key[len("request.headers[") : -1].lower())
    elif key == "source.ip":
        value, match = request.source_ip, _ip_in
    elif key == "source.namespace":
        value = request.source_namespace or None
    elif key == "source.principal":
        value = request.principal or None
    else:  # destination.port (validated on construction)
        value = str(request.port)
    return _field(condition.values, condition.not_values, value, match)
