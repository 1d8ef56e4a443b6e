"""ztunnel's static config file (``LOCAL_XDS_PATH``) read into discovery objects.

The file is ztunnel's own shape, so a config written for Istio's ztunnel runs here unchanged::

    workloads:   [{uid, name, namespace, serviceAccount, workloadIps, protocol: HBONE|TCP, node,
                   network, waypoint: {destination: "net/ip"|"ns/host", hboneMtlsPort},
                   services: {"ns/hostname": {servicePort: targetPort}}, authorizationPolicies, ...}]
    services:    [{name, namespace, hostname, vips: ["net/ip"], ports: {servicePort: targetPort},
                   subjectAltNames, waypoint, loadBalancer: {routingPreferences, mode, healthPolicy}}]
    policies:    [{name, namespace, scope: Global|Namespace|WorkloadSelector, action: Allow|Deny,
                   rules: [[[ {namespaces, notPrincipals, sourceIps, destinationPorts, ...} ]]]}]

String matches are written ``{Exact: v}``, ``{Prefix: v}``, ``{Suffix: v}`` or ``{Presence: []}`` (as
ztunnel serialises them; lower-case keys are accepted too). Every problem is reported at once with
the file and field path, e.g. ``local.yaml: workloads[0].workloadIps[1]: '10.0.0.300' is not an IP
address``. Fields ztunnel has that this mesh does not model are refused by name rather than ignored,
except purely informational ones (``canonical``, ``clusterId``, ...) which are listed in ``IGNORED``.
"""

from __future__ import annotations

import difflib
import enum
import functools
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import yaml

from meshcore.errors import MeshError
from schemas.discovery import (
    Action,
    Authorization,
    Clause,
    GatewayAddress,
    HealthPolicy,
    LoadBalancing,
    LoadBalancingMode,
    LocalityScope,
    Match,
    NamespacedHostname,
    NetworkAddress,
    Rule,
    Scope,
    Service,
    ServicePort,
    StringMatch,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    WorkloadType,
    resource_key,
)

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")

# Informational fields ztunnel's file may carry that change nothing here.
IGNORED = {
    "workload": {"clusterId", "locality", "canonical"},
    "service": {"canonical", "visibility", "ipFamilies"},
    "policy": set(),
}
# ztunnel fields this mesh does not implement: refused by name so nobody thinks they took effect.
UNSUPPORTED = {
    "workload": {"networkGateway", "hostname", "nativeTunnel", "applicationTunnel", "networkMode", "extensions"},
    "service": {"cidrVips", "endpoints", "weightedWaypoints", "ingressUseWaypoint", "extensions"},
    "match": {"serviceAccounts", "notServiceAccounts"},
}
_WORKLOAD_FIELDS = {
    "uid", "name", "namespace", "workloadIps", "protocol", "network", "trustDomain", "serviceAccount", "waypoint",
    "node", "canonicalName", "canonicalRevision", "workloadName", "workloadType", "services",
    "authorizationPolicies", "status", "capacity",
}
_SERVICE_FIELDS = {
    "name", "namespace", "hostname", "vips", "ports", "subjectAltNames", "waypoint", "loadBalancer",
}
_POLICY_FIELDS = {"name", "namespace", "scope", "action", "rules", "dryRun"}
_MATCH_FIELDS = {
    "namespaces": "namespaces", "notNamespaces": "not_namespaces",
    "principals": "principals", "notPrincipals": "not_principals",
    "sourceIps": "source_ips", "notSourceIps": "not_source_ips",
    "destinationIps": "destination_ips", "notDestinationIps": "not_destination_ips",
    "destinationPorts": "destination_ports", "notDestinationPorts": "not_destination_ports",
}


class LocalConfigError(MeshError):
    hint = "fix {path} (ztunnel's LOCAL_XDS_PATH shape: top-level workloads, services, policies)"


@attrs.frozen(kw_only=True)
class LocalConfig:
    workloads: tuple[Workload, ...] = ()
    services: tuple[Service, ...] = ()
    policies: tuple[Authorization, ...] = ()
    warnings: tuple[str, ...] = ()


class _Invalid(Exception):
    """One field is wrong; raised inside a reader, collected by the object's caller."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def load_local_config(path: str | Path) -> LocalConfig:
    """Read ``path``; raise ``LocalConfigError`` listing every problem, each with file and field path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalConfigError(f"{path}: cannot read: {exc.strerror}", path=path) from None
    return parse_local_config(text, source=str(path))


def parse_local_config(text: str, *, source: str = "<local config>") -> LocalConfig:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LocalConfigError(f"{source}: not valid YAML: {exc}", path=source) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise LocalConfigError(
            f"{source}: expected a mapping with workloads, services and policies, got {type(document).__name__}",
            path=source,
        )
    loader = _Loader()
    loader.check_keys(document, "", {"workloads", "services", "policies"}, set())
    workloads = loader.each(document, "workloads", loader.workload)
    services = loader.each(document, "services", loader.service)
    policies = loader.each(document, "policies", loader.policy)
    enforced = [(index, policy) for index, policy in policies if policy is not None]
    for kind, items in (("workloads", workloads), ("services", services), ("policies", enforced)):
        seen: dict[str, int] = {}
        for index, item in items:
            key = resource_key(item)
            if key in seen:
                loader.errors.append(f"{kind}[{index}]: {key} is already defined at {kind}[{seen[key]}]")
            seen.setdefault(key, index)
    if loader.errors:
        details = "\n  ".join(loader.errors)
        raise LocalConfigError(f"{source}: {len(loader.errors)} problem(s):\n  {details}", path=source)
    return LocalConfig(
        workloads=tuple(w for _, w in workloads),
        services=tuple(s for _, s in services),
        policies=tuple(p for _, p in enforced),
        warnings=tuple(f"{source}: {warning}" for warning in loader.warnings),
    )


class _Skip(Exception):
    """An object had errors (already recorded); leave it out and keep reading the rest."""


class _Loader:
    """Readers for each object. A field that fails is recorded and reading goes on, so one run reports
    every problem in the file; an object with any problem is then skipped via ``_Skip``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def get(self, read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except _Skip:
            return fallback
        except _Invalid as exc:
            self.errors.append(str(exc))
            return fallback

    def items(self, values: list[Any], read: Callable[[Any, str], T], path: str) -> tuple[T, ...]:
        out: list[T] = []
        for index, value in enumerate(values):
            try:
                out.append(read(value, f"{path}[{index}]"))
            except _Skip:
                continue
            except _Invalid as exc:
                self.errors.append(str(exc))
        return tuple(out)

    def each(self, document: Mapping[str, Any], key: str, read: Callable[[Any, str], T]) -> list[tuple[int, T]]:
        values = document.get(key) or []
        if not isinstance(values, list):
            self.errors.append(f"{key}: expected a list, got {type(values).__name__}")
            return []
        out: list[tuple[int, T]] = []
        for index, value in enumerate(values):
            try:
                out.append((index, read(value, f"{key}[{index}]")))
            except _Skip:
                continue
            except _Invalid as exc:
                self.errors.append(str(exc))
        return out

    def check_keys(
        self, obj: Mapping[str, Any], path: str, known: set[str], ignored: set[str], kind: str = ""
    ) -> None:
        for key in obj:
            if key in known or key in ignored:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key in UNSUPPORTED.get(kind, ()):
                self.errors.append(f"{where}: ztunnel field not supported by this mesh")
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (not supported by this mesh)"
            self.errors.append(f"{where}: unknown field{hint}")

    def finish(self, errors_before: int, path: str, make: Callable[[], T]) -> T:
        """Build the object if its fields were all fine; attrs validators' errors land at ``path``."""
        if len(self.errors) > errors_before:
            raise _Skip
        try:
            return make()
        except ValueError as exc:
            raise _Invalid(path, str(exc)) from None

    # --------------------------------------------------------------------------------- objects

    def workload(self, value: Any, path: str) -> Workload:
        obj, before, get = _mapping(value, path), len(self.errors), self.get
        self.check_keys(obj, path, _WORKLOAD_FIELDS, IGNORED["workload"], "workload")
        name = get(lambda: _str(obj, "name", path, required=True), "")
        namespace = get(lambda: _str(obj, "namespace", path, required=True), "")
        protocol = get(lambda: _protocol(obj, path), TunnelProtocol.NONE)
        services: Mapping[str, Any] = get(lambda: _mapping(obj.get("services") or {}, f"{path}.services"), {})
        service_ports: dict[str, dict[int, int]] = {}
        for key, ports in services.items():
            try:
                service_ports[_service_key(key, f"{path}.services")] = _port_map(ports, f"{path}.services[{key!r}]")
            except _Invalid as exc:
                self.errors.append(str(exc))
        uid = get(lambda: _str(obj, "uid", path), "") or f"Kubernetes//Pod/{namespace}/{name}"
        fields: dict[str, Any] = {
            "addresses": self.items(get(lambda: _list(obj, "workloadIps", path), []), _ip, f"{path}.workloadIps"),
            "network": get(lambda: _str(obj, "network", path), ""),
            "trust_domain": get(lambda: _str(obj, "trustDomain", path), "") or "cluster.local",
            "service_account": get(lambda: _str(obj, "serviceAccount", path), "") or "default",
            "waypoint": get(lambda: self.gateway(obj.get("waypoint"), f"{path}.waypoint"), None),
            "node": get(lambda: _str(obj, "node", path), ""),
            "canonical_name": get(lambda: _str(obj, "canonicalName", path), ""),
            "canonical_revision": get(lambda: _str(obj, "canonicalRevision", path), ""),
            "workload_name": get(lambda: _str(obj, "workloadName", path), ""),
            "workload_type": get(lambda: _enum(WorkloadType, obj.get("workloadType"), f"{path}.workloadType",
                                               WorkloadType.DEPLOYMENT), WorkloadType.DEPLOYMENT),
            "authorization_policies": self.items(
                get(lambda: _list(obj, "authorizationPolicies", path), []), _as_str, f"{path}.authorizationPolicies"),
            "status": get(lambda: _enum(WorkloadStatus, obj.get("status"), f"{path}.status", WorkloadStatus.HEALTHY),
                          WorkloadStatus.HEALTHY),
            "capacity": get(lambda: _int(obj, "capacity", path, default=1), 1),
        }
        return self.finish(before, path, lambda: Workload(
            uid=uid, name=name, namespace=namespace, tunnel_protocol=protocol, services=service_ports, **fields))

    def service(self, value: Any, path: str) -> Service:
        obj, before, get = _mapping(value, path), len(self.errors), self.get
        self.check_keys(obj, path, _SERVICE_FIELDS, IGNORED["service"], "service")
        ports: dict[int, int] = get(lambda: _port_map(obj.get("ports") or {}, f"{path}.ports"), {})
        fields: dict[str, Any] = {
            "name": get(lambda: _str(obj, "name", path, required=True), ""),
            "namespace": get(lambda: _str(obj, "namespace", path, required=True), ""),
            "hostname": get(lambda: _str(obj, "hostname", path, required=True), ""),
            "vips": self.items(get(lambda: _list(obj, "vips", path), []), _network_address, f"{path}.vips"),
            "subject_alt_names": self.items(
                get(lambda: _list(obj, "subjectAltNames", path), []), _as_str, f"{path}.subjectAltNames"),
            "waypoint": get(lambda: self.gateway(obj.get("waypoint"), f"{path}.waypoint"), None),
            "load_balancing": get(lambda: self.load_balancer(obj.get("loadBalancer"), f"{path}.loadBalancer"), None),
        }
        return self.finish(before, path, lambda: Service(
            ports=tuple(ServicePort(service_port=p, target_port=t) for p, t in sorted(ports.items())), **fields))

    def policy(self, value: Any, path: str) -> Authorization | None:
        obj, before, get = _mapping(value, path), len(self.errors), self.get
        self.check_keys(obj, path, _POLICY_FIELDS, IGNORED["policy"])
        fields: dict[str, Any] = {
            "name": get(lambda: _str(obj, "name", path, required=True), ""),
            "namespace": get(lambda: _str(obj, "namespace", path, required=True), ""),
            "scope": get(lambda: _enum(Scope, obj.get("scope"), f"{path}.scope", Scope.WORKLOAD_SELECTOR),
                         Scope.WORKLOAD_SELECTOR),
            "action": get(lambda: _enum(Action, obj.get("action"), f"{path}.action", Action.ALLOW), Action.ALLOW),
            "rules": self.items(get(lambda: _list(obj, "rules", path), []), self.rule, f"{path}.rules"),
        }
        dry_run = get(lambda: _bool(obj, "dryRun", path), False)
        built = self.finish(before, path, lambda: Authorization(**fields))
        if dry_run:
            # ztunnel only logs dry-run policies; never enforcing them keeps its decisions exactly.
            self.warnings.append(f"{path}: dry-run policy {resource_key(built)} is not enforced")
            return None
        return built

    def rule(self, value: Any, path: str) -> Rule:
        if not isinstance(value, list):
            raise _Invalid(path, "expected a list of clauses (rules are [[[match, ...], ...], ...])")
        return Rule(clauses=self.items(value, self.clause, path))

    def clause(self, value: Any, path: str) -> Clause:
        if not isinstance(value, list):
            raise _Invalid(path, "expected a list of matches")
        return Clause(matches=self.items(value, self.match, path))

    def match(self, value: Any, path: str) -> Match:
        obj, before = _mapping(value, path), len(self.errors)
        self.check_keys(obj, path, set(_MATCH_FIELDS), set(), "match")
        fields: dict[str, tuple[Any, ...]] = {}
        for key, field in _MATCH_FIELDS.items():
            values: list[Any] = self.get(functools.partial(_list, obj, key, path), [])
            read: Callable[[Any, str], Any]
            if field.endswith(("namespaces", "principals")):
                read = _string_match
            elif field.endswith("_ips"):
                read = _cidr
            else:
                read = _port
            fields[field] = self.items(values, read, f"{path}.{key}")
        return self.finish(before, path, lambda: Match(**fields))

    def gateway(self, value: Any, path: str) -> GatewayAddress | None:
        if value is None:
            return None
        obj = _mapping(value, path)
        self.check_keys(obj, path, {"destination", "hboneMtlsPort"}, set())
        destination = _str(obj, "destination", path, required=True)
        first, sep, rest = destination.partition("/")
        if not sep or not rest:
            raise _Invalid(f"{path}.destination", f"expected network/IP or namespace/hostname, got {destination!r}")
        port = _port(obj["hboneMtlsPort"], f"{path}.hboneMtlsPort") if "hboneMtlsPort" in obj else 15008
        if _is_ip(rest):
            return GatewayAddress(address=NetworkAddress(network=first, address=rest), hbone_mtls_port=port)
        if not first:
            raise _Invalid(f"{path}.destination", f"a hostname needs a namespace: {destination!r}")
        return GatewayAddress(hostname=NamespacedHostname(namespace=first, hostname=rest), hbone_mtls_port=port)

    def load_balancer(self, value: Any, path: str) -> LoadBalancing | None:
        if value is None:
            return None
        obj = _mapping(value, path)
        self.check_keys(obj, path, {"routingPreferences", "mode", "healthPolicy"}, set())
        return LoadBalancing(
            routing_preference=tuple(
                _enum(LocalityScope, v, f"{path}.routingPreferences[{i}]", None)
                for i, v in enumerate(_list(obj, "routingPreferences", path))
            ),
            mode=_enum(LoadBalancingMode, obj.get("mode"), f"{path}.mode", LoadBalancingMode.STANDARD),
            health_policy=_enum(
                HealthPolicy, obj.get("healthPolicy"), f"{path}.healthPolicy", HealthPolicy.ONLY_HEALTHY),
        )


# ---------------------------------------------------------------------------------- field readers


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{path}.{key}", f"expected a list, got {type(value).__name__} {value!r}")
    return value


def _as_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _str(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise _Invalid(f"{path}.{key}", "required field missing")
        return ""
    return _as_str(obj[key], f"{path}.{key}")


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = obj.get(key, False)
    if type(value) is not bool:
        raise _Invalid(f"{path}.{key}", f"expected true or false, got {value!r}")
    return value


def _protocol(obj: Mapping[str, Any], path: str) -> TunnelProtocol:
    """ztunnel's inbound protocol: HBONE, or TCP (its default) for a workload outside the mesh."""
    protocol = _str(obj, "protocol", path) or "TCP"
    if protocol not in ("HBONE", "TCP"):
        raise _Invalid(f"{path}.protocol", f"expected HBONE or TCP, got {protocol!r}")
    return TunnelProtocol.HBONE if protocol == "HBONE" else TunnelProtocol.NONE


def _int(obj: Mapping[str, Any], key: str, path: str, *, default: int) -> int:
    value = obj.get(key, default)
    if type(value) is not int:
        raise _Invalid(f"{path}.{key}", f"expected an integer, got {type(value).__name__} {value!r}")
    return value


def _port(value: Any, path: str) -> int:
    if type(value) is not int or not 1 <= value <= 65535:
        raise _Invalid(path, f"expected a port number 1..65535, got {value!r}")
    return value


def _port_map(value: Any, path: str) -> dict[int, int]:
    mapping = _mapping(value, path)
    return {_port(k, f"{path} key {k!r}"): _port(v, f"{path}[{k!r}]") for k, v in mapping.items()}


def _service_key(value: Any, path: str) -> str:
    key = _as_str(value, path)
    namespace, sep, hostname = key.partition("/")
    if not sep or not namespace or not hostname:
        raise _Invalid(path, f"key {key!r} is not of the form namespace/hostname")
    return key


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ip(value: Any, path: str) -> str:
    text = _as_str(value, path)
    if not _is_ip(text):
        raise _Invalid(path, f"{text!r} is not an IP address")
    return text


def _cidr(value: Any, path: str) -> str:
    text = _as_str(value, path)
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Invalid(path, f"{text!r} is not an IP address or CIDR") from None
    return text


def _network_address(value: Any, path: str) -> NetworkAddress:
    text = _as_str(value, path)
    network, sep, address = text.rpartition("/")
    if not sep:
        raise _Invalid(path, f"expected network/IP (use a leading '/' for the default network), got {text!r}")
    return NetworkAddress(network=network, address=_ip(address, path))


def _enum(kind: type[E], value: Any, path: str, default: E | None) -> E:
    """Match ztunnel's serde names (``WorkloadSelector``, ``OnlyHealthy``) and Istio's (``WORKLOAD_SELECTOR``)."""
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        wanted = value.replace("_", "").lower()
        for member in kind:
            if member.name.replace("_", "").lower() == wanted:
                return member
    choices = ", ".join(member.name.title().replace("_", "") for member in kind)
    raise _Invalid(path, f"expected one of {choices}, got {value!r}")


def _string_match(value: Any, path: str) -> StringMatch:
    obj = _mapping(value, path)
    if len(obj) != 1:
        raise _Invalid(path, "expected exactly one of Exact, Prefix, Suffix or Presence")
    ((kind, operand),) = obj.items()
    kind = str(kind).lower()
    if kind == "presence":
        return StringMatch(presence=True)
    if kind == "exact":
        return StringMatch(exact=_as_str(operand, f"{path}.Exact"))
    if kind == "prefix":
        return StringMatch(prefix=_as_str(operand, f"{path}.Prefix"))
    if kind == "suffix":
        return StringMatch(suffix=_as_str(operand, f"{path}.Suffix"))
    raise _Invalid(path, f"unknown string match {kind!r}; expected Exact, Prefix, Suffix or Presence")
