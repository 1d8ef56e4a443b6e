"""The pushed discovery model: what istiod_lite sends to ztunnels (Istio's workload API).

These types follow ``istio.workload.Workload``/``Service`` and ``istio.security.Authorization`` so an
Istio engineer recognises every field; only what this mesh uses is modelled. They are frozen
values: a proxy swaps whole objects on a push and never mutates one in place, which is what lets
``ProxyState.apply`` be transactional.

The JSON form (``to_json``/``from_json``) is the push protocol's resource body. It is strict on
purpose: an unknown key, a string where a port belongs or a malformed CIDR is a NACK with the field
path, never a silently defaulted value on the data path.
"""

from __future__ import annotations

import enum
import ipaddress
import typing
from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

import attrs
import cattrs
import cattrs.cols

from meshcore.errors import MeshError

HBONE_PORT = 15008
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_SERVICE_ACCOUNT = "default"


class DiscoveryDecodeError(MeshError):
    """A pushed or loaded discovery resource is malformed; the message carries every field path."""

    hint = "check the {type_name} resource sent by the control plane (or the local config file)"


# --------------------------------------------------------------------------------------- validators


def _check_ip(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{attribute.name}: {value!r} is not an IP address") from None


def _check_ips(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for ip in value:
        _check_ip(_inst, attribute, ip)


def _check_cidrs(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{attribute.name}: {cidr!r} is not an IP address or CIDR") from None


def _check_port(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name}: port {value} is outside 1..65535")


def _check_ports(_inst: object, attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
    for port in value:
        _check_port(_inst, attribute, port)


def _check_nonempty(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: must not be empty")


def _check_service_ports(
    _inst: object, attribute: attrs.Attribute[Any], value: Mapping[str, Mapping[int, int]]
) -> None:
    for key, ports in value.items():
        namespace, sep, hostname = key.partition("/")
        if not sep or not namespace or not hostname:
            raise ValueError(f"{attribute.name}: key {key!r} is not of the form namespace/hostname")
        for service_port, target_port in ports.items():
            if not 1 <= service_port <= 65535 or not 1 <= target_port <= 65535:
                raise ValueError(f"{attribute.name}[{key!r}]: port {service_port}->{target_port} outside 1..65535")


# ------------------------------------------------------------------------------------------- enums


class TunnelProtocol(enum.StrEnum):
    """How to reach a workload: HBONE tunnel to its :15008, or plain TCP (not in the mesh)."""

    HBONE = "HBONE"
    NONE = "NONE"


class WorkloadStatus(enum.StrEnum):
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


class WorkloadType(enum.StrEnum):
    DEPLOYMENT = "DEPLOYMENT"
    CRONJOB = "CRONJOB"
    POD = "POD"
    JOB = "JOB"


class AppProtocol(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    HTTP11 = "HTTP11"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    TCP = "TCP"
    TLS = "TLS"


class LoadBalancingMode(enum.StrEnum):
    """STANDARD ignores routing preferences; STRICT only uses endpoints matching all of them; FAILOVER
    prefers the best match; PASSTHROUGH skips endpoint selection and dials the original address."""

    STANDARD = "STANDARD"
    STRICT = "STRICT"
    FAILOVER = "FAILOVER"
    PASSTHROUGH = "PASSTHROUGH"


class HealthPolicy(enum.StrEnum):
    ONLY_HEALTHY = "ONLY_HEALTHY"
    ALLOW_ALL = "ALLOW_ALL"


class LocalityScope(enum.StrEnum):
    """Routing-preference scopes. Only the ones a Workload here carries data for (its node and its
    network); Istio's region/zone/subzone/cluster would need locality we do not model."""

    NODE = "NODE"
    NETWORK = "NETWORK"


class Scope(enum.StrEnum):
    """Which workloads an Authorization applies to: all (root-namespace policies), one namespace's,
    or only the workloads that list it in ``authorization_policies``."""

    GLOBAL = "GLOBAL"
    NAMESPACE = "NAMESPACE"
    WORKLOAD_SELECTOR = "WORKLOAD_SELECTOR"


class Action(enum.StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


# ------------------------------------------------------------------------------------ shared parts


@attrs.frozen(kw_only=True)
class NetworkAddress:
    """An IP on a network; (network, address) is unique, the default network is ``""``."""

    address: str = attrs.field(validator=_check_ip)
    network: str = ""


@attrs.frozen(kw_only=True)
class NamespacedHostname:
    namespace: str = attrs.field(validator=_check_nonempty)
    hostname: str = attrs.field(validator=_check_nonempty)

    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"


@attrs.frozen(kw_only=True)
class GatewayAddress:
    """Where a waypoint is reached: by IP (a VIP or a workload IP) or by service hostname, on its
    HBONE port. Hostname is what istiod sends; it adapts to the caller's IP family."""

    address: NetworkAddress | None = None
    hostname: NamespacedHostname | None = None
    hbone_mtls_port: int = attrs.field(default=HBONE_PORT, validator=_check_port)

    def __attrs_post_init__(self) -> None:
        if (self.address is None) == (self.hostname is None):
            raise ValueError("waypoint: exactly one of address or hostname must be set")


# ----------------------------------------------------------------------------------------- Workload


@attrs.frozen(kw_only=True)
class Workload:
    """One pod (or VM) as the data plane sees it. ``services`` maps ``ns/hostname`` to this workload's
    own {service port: target port}, which is how a workload becomes a service endpoint."""

    uid: str = attrs.field(validator=_check_nonempty)
    name: str = attrs.field(validator=_check_nonempty)
    namespace: str = attrs.field(validator=_check_nonempty)
    addresses: tuple[str, ...] = attrs.field(default=(), validator=_check_ips)
    network: str = ""
    tunnel_protocol: TunnelProtocol = TunnelProtocol.HBONE
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    waypoint: GatewayAddress | None = None
    node: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    workload_name: str = ""
    workload_type: WorkloadType = WorkloadType.DEPLOYMENT
    services: dict[str, dict[int, int]] = attrs.field(factory=dict, validator=_check_service_ports)
    authorization_policies: tuple[str, ...] = ()
    status: WorkloadStatus = WorkloadStatus.HEALTHY
    capacity: int = attrs.field(default=1, validator=attrs.validators.ge(0))

    @property
    def identity(self) -> str:
        """The SPIFFE ID this workload's certificate carries."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


# ------------------------------------------------------------------------------------------ Service


@attrs.frozen(kw_only=True)
class ServicePort:
    """``target_port`` 0 means "per workload" (a named targetPort): each endpoint's own map decides."""

    service_port: int = attrs.field(validator=_check_port)
    target_port: int = attrs.field(default=0, validator=attrs.validators.and_(
        attrs.validators.ge(0), attrs.validators.le(65535)))
    app_protocol: AppProtocol = AppProtocol.UNKNOWN


@attrs.frozen(kw_only=True)
class LoadBalancing:
    routing_preference: tuple[LocalityScope, ...] = ()
    mode: LoadBalancingMode = LoadBalancingMode.STANDARD
    health_policy: HealthPolicy = HealthPolicy.ONLY_HEALTHY


@attrs.frozen(kw_only=True)
class Service:
    """A group of workloads reached through VIPs and/or a hostname; keyed ``namespace/hostname``."""

    name: str = attrs.field(validator=_check_nonempty)
    namespace: str = attrs.field(validator=_check_nonempty)
    hostname: str = attrs.field(validator=_check_nonempty)
    vips: tuple[NetworkAddress, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    load_balancing: LoadBalancing | None = None

    def port(self, service_port: int) -> ServicePort | None:
        for port in self.ports:
            if port.service_port == service_port:
                return port
        return None


# ------------------------------------------------------------------------------------ Authorization


@attrs.frozen(kw_only=True)
class StringMatch:
    """Istio's StringMatch: exactly one of exact, prefix, suffix, or presence (any non-empty value)."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    presence: bool = False

    def __attrs_post_init__(self) -> None:
        chosen = [self.exact is not None, self.prefix is not None, self.suffix is not None, self.presence]
        if sum(chosen) != 1:
            raise ValueError("string match: exactly one of exact, prefix, suffix or presence must be set")

    def matches(self, value: str) -> bool:
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        if self.suffix is not None:
            return value.endswith(self.suffix)
        return value != ""


@attrs.frozen(kw_only=True)
class Match:
    """Within one field values OR; set fields AND; a ``not_`` field must match none of its values."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[str, ...] = attrs.field(default=(), validator=_check_cidrs)
    not_source_ips: tuple[str, ...] = attrs.field(default=(), validator=_check_cidrs)
    destination_ips: tuple[str, ...] = attrs.field(default=(), validator=_check_cidrs)
    not_destination_ips: tuple[str, ...] = attrs.field(default=(), validator=_check_cidrs)
    destination_ports: tuple[int, ...] = attrs.field(default=(), validator=_check_ports)
    not_destination_ports: tuple[int, ...] = attrs.field(default=(), validator=_check_ports)

    def is_empty(self) -> bool:
        return not any(getattr(self, field.name) for field in attrs.fields(Match))


@attrs.frozen(kw_only=True)
class Clause:
    """Matches OR (one AuthorizationPolicy ``from``/``to``/``when`` entry becomes one clause)."""

    matches: tuple[Match, ...] = ()


@attrs.frozen(kw_only=True)
class Rule:
    """Clauses AND (one AuthorizationPolicy rule)."""

    clauses: tuple[Clause, ...] = ()


@attrs.frozen(kw_only=True)
class Authorization:
    """An L4 authorization policy as ztunnel enforces it; rules OR. Keyed ``namespace/name``."""

    name: str = attrs.field(validator=_check_nonempty)
    namespace: str = attrs.field(validator=_check_nonempty)
    scope: Scope = Scope.WORKLOAD_SELECTOR
    action: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()


# ------------------------------------------------------------------------------ keys and registry

DiscoveryResource: TypeAlias = Workload | Service | Authorization
R = TypeVar("R", Workload, Service, Authorization)

RESOURCE_TYPES: Mapping[str, type[Workload] | type[Service] | type[Authorization]] = {
    "workload": Workload,
    "service": Service,
    "authorization": Authorization,
}


def type_name(obj: DiscoveryResource) -> str:
    """The push protocol's type name for ``obj`` (inverse of ``RESOURCE_TYPES``)."""
    for name, cls in RESOURCE_TYPES.items():
        if isinstance(obj, cls):
            return name
    raise TypeError(f"not a discovery resource: {type(obj).__name__}")


def resource_key(obj: DiscoveryResource) -> str:
    """The key a push names a resource by: Workload uid, Service ``ns/hostname``, Authorization ``ns/name``."""
    if isinstance(obj, Workload):
        return obj.uid
    if isinstance(obj, Service):
        return f"{obj.namespace}/{obj.hostname}"
    return f"{obj.namespace}/{obj.name}"


# ------------------------------------------------------------------------------------- converter


def _strict(kind: type[Any]) -> Any:
    """Reject values cattrs would coerce (``"80"`` or ``True`` for an int, ``1`` for a str)."""

    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    return structure


def _is_port_map(kind: Any) -> bool:
    return bool(kind == dict[int, int])


def _structure_enum(value: Any, kind: type[enum.StrEnum]) -> enum.StrEnum:
    if type(value) is not str:
        raise TypeError(f"expected one of {', '.join(kind)}, got {type(value).__name__} {value!r}")
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{value!r} is not one of {', '.join(kind)}") from None


def _is_homogeneous_tuple(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def _list_only_tuple_factory(kind: Any, converter: cattrs.BaseConverter) -> Any:
    """cattrs would turn the string ``"abc"`` into ``("a", "b", "c")``; a list field must get a list."""
    inner = cattrs.cols.homogenous_tuple_structure_factory(kind, converter)

    def structure(value: Any, _type: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__} {value!r}")
        return inner(value, _type)

    return structure


def _structure_port_map(value: Any, _type: Any) -> dict[int, int]:
    """Port maps arrive with string keys once through JSON; accept digit strings, reject the rest."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping of service port to target port, got {type(value).__name__}")
    out: dict[int, int] = {}
    for key, target in value.items():
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if type(key) is not int or type(target) is not int:
            raise TypeError(f"expected integer ports, got {key!r}: {target!r}")
        out[key] = target
    return out


def _structure_string_match(value: Any, _type: Any) -> StringMatch:
    if not isinstance(value, Mapping) or len(value) != 1:
        raise TypeError("expected exactly one of {exact|prefix|suffix: string} or {presence: {}}")
    ((kind, operand),) = value.items()
    if kind == "presence":
        if operand not in ({}, None, True):
            raise TypeError("presence takes no value ({})")
        return StringMatch(presence=True)
    if kind not in ("exact", "prefix", "suffix") or not isinstance(operand, str):
        raise TypeError(f"expected exact, prefix or suffix with a string, got {kind!r}: {operand!r}")
    if kind == "exact":
        return StringMatch(exact=operand)
    if kind == "prefix":
        return StringMatch(prefix=operand)
    return StringMatch(suffix=operand)


def _unstructure_string_match(match: StringMatch) -> dict[str, Any]:
    if match.presence:
        return {"presence": {}}
    for kind in ("exact", "prefix", "suffix"):
        operand = getattr(match, kind)
        if operand is not None:
            return {kind: operand}
    raise AssertionError("unreachable: StringMatch validates that one kind is set")


def _describe(exc: BaseException, _type: Any) -> str:
    """cattrs' default text drops the validator's own message, which is the useful part here."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, _type)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, omit_if_default=True)
    for kind in (int, str, bool):
        converter.register_structure_hook(kind, _strict(kind))
    # StrEnum sits before str in the MRO, so this keeps the ``str`` hook above off the enums.
    converter.register_structure_hook(enum.StrEnum, _structure_enum)
    # Plain strings out, so a body handed over in-process (no json.dumps in between) decodes again.
    converter.register_unstructure_hook(enum.StrEnum, str)
    is_port_map = _is_port_map
    converter.register_structure_hook_func(is_port_map, _structure_port_map)
    converter.register_unstructure_hook_func(is_port_map, lambda ports: {str(k): v for k, v in ports.items()})
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _list_only_tuple_factory)
    converter.register_structure_hook(StringMatch, _structure_string_match)
    converter.register_unstructure_hook(StringMatch, _unstructure_string_match)
    return converter


discovery_converter = _make_converter()


def to_json(obj: DiscoveryResource) -> dict[str, Any]:
    """The JSON body of ``obj`` for a push (defaults omitted; port-map keys as strings, as JSON has them)."""
    result: dict[str, Any] = discovery_converter.unstructure(obj)
    return result


def from_json(kind: type[R], data: Any) -> R:
    """Decode a pushed resource body, reporting every problem with its field path."""
    name = next((n for n, c in RESOURCE_TYPES.items() if c is kind), kind.__name__)
    if not isinstance(data, Mapping):
        raise DiscoveryDecodeError(f"expected an object, got {type(data).__name__} @ {name}", type_name=name)
    try:
        return discovery_converter.structure(data, kind)
    except Exception as exc:  # cattrs raises grouped exceptions; attrs validators raise ValueError
        if isinstance(exc, cattrs.BaseValidationError):
            messages = cattrs.transform_error(exc, path=name, format_exception=_describe)
        else:
            messages = [f"{_describe(exc, None)} @ {name}"]
        raise DiscoveryDecodeError("; ".join(messages), type_name=name) from exc


def decode(kind_name: str, data: Any) -> DiscoveryResource:
    """``from_json`` by push type name (``"workload"``, ``"service"``, ``"authorization"``)."""
    kind = RESOURCE_TYPES.get(kind_name)
    if kind is None:
        raise DiscoveryDecodeError(
            f"unknown resource type {kind_name!r} (expected one of {', '.join(RESOURCE_TYPES)})",
            type_name=kind_name,
        )
    if kind is Workload:
        return from_json(Workload, data)
    if kind is Service:
        return from_json(Service, data)
    return from_json(Authorization, data)
