"""What a ztunnel knows about the mesh, and the lookups its data path makes against it.

``ProxyState`` is sans-IO: the push client (or the local config loader) hands it resources, the
inbound/outbound shells ask it questions. An update is validated completely before anything changes
— decoding, key consistency and cross-resource conflicts (two workloads on one IP, two services on
one VIP) — so a rejected push raises ``RejectedUpdate`` (the NACK text) and the last good state stays
in force, as DESIGN §3 requires.

Outbound resolution follows ztunnel: a service VIP or hostname first (its waypoint if it has one,
else an endpoint), then a workload IP (its waypoint if it has one), else passthrough.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from meshcore.errors import MeshError
from schemas.discovery import (
    HBONE_PORT,
    RESOURCE_TYPES,
    Authorization,
    DiscoveryDecodeError,
    DiscoveryResource,
    GatewayAddress,
    LoadBalancingMode,
    Scope,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    decode,
    resource_key,
    to_json,
)
from ztunnel import lb

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


class RejectedUpdate(MeshError):
    """A push (or local config) that cannot be applied; nothing was changed. Its text is the NACK."""

    hint = "the previous configuration stays in force; fix the {type_name} resources the control plane sent"


class UnknownWaypoint(MeshError):
    response_flag = "NR"
    hint = "waypoint {waypoint} is not known to this ztunnel; is the waypoint deployed and its Service pushed?"


class DestinationKind(enum.StrEnum):
    DIRECT = "direct"  # to the chosen workload: HBONE to its :15008, or plain TCP if it is not in the mesh
    WAYPOINT = "waypoint"  # HBONE to the waypoint, :authority the original address
    PASSTHROUGH = "passthrough"  # not a mesh destination: plain TCP to what the client asked for


@attrs.frozen(kw_only=True)
class Destination:
    """Where one outbound connection goes. ``address:port`` is the next hop to dial; with an HBONE
    tunnel, ``authority`` is the CONNECT ``:authority`` and ``expected_identities`` the URI SANs the
    peer's certificate may carry. ``workload`` is who really answers (the endpoint or the waypoint),
    ``service`` the service the client addressed, if any."""

    kind: DestinationKind
    address: str
    port: int
    tunnel: TunnelProtocol = TunnelProtocol.NONE
    authority: str | None = None
    workload: Workload | None = None
    service: Service | None = None
    expected_identities: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ApplyResult:
    upserted: tuple[str, ...]
    removed: tuple[str, ...]
    unknown_removals: tuple[str, ...]  # delta xDS tolerates removing what we never had; reported, not an error


def host_port(host: str, port: int) -> str:
    """``ip:port`` with IPv6 bracketed, as an HTTP authority needs."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


@attrs.frozen
class _Tables:
    """One consistent generation of resources plus the indices derived from them."""

    workloads: Mapping[str, Workload]
    services: Mapping[str, Service]
    policies: Mapping[str, Authorization]
    workload_by_ip: Mapping[tuple[str, str], Workload]
    service_by_vip: Mapping[tuple[str, str], Service]
    services_by_hostname: Mapping[str, tuple[Service, ...]]
    endpoints: Mapping[str, tuple[Workload, ...]]
    scoped_policies: Mapping[str, tuple[str, ...]]  # "" → GLOBAL keys, namespace → NAMESPACE keys

    @classmethod
    def build(
        cls,
        workloads: Mapping[str, Workload],
        services: Mapping[str, Service],
        policies: Mapping[str, Authorization],
    ) -> _Tables:
        """Derive the indices; raise ``ValueError`` listing every conflict found."""
        problems: list[str] = []
        by_ip: dict[tuple[str, str], Workload] = {}
        endpoints: dict[str, list[Workload]] = {}
        for uid in sorted(workloads):
            workload = workloads[uid]
            for address in workload.addresses:
                key = (workload.network, str(ipaddress.ip_address(address)))
                other = by_ip.setdefault(key, workload)
                if other is not workload:
                    problems.append(f"workloads {other.uid} and {uid} both claim address {address}")
            for service_key in workload.services:
                endpoints.setdefault(service_key, []).append(workload)
        by_vip: dict[tuple[str, str], Service] = {}
        by_host: dict[str, list[Service]] = {}
        for service_key in sorted(services):
            service = services[service_key]
            for vip in service.vips:
                vip_key = (vip.network, str(ipaddress.ip_address(vip.address)))
                other_service = by_vip.setdefault(vip_key, service)
                if other_service is not service:
                    problems.append(
                        f"services {resource_key(other_service)} and {service_key} both claim VIP {vip.address}")
            by_host.setdefault(service.hostname.lower(), []).append(service)
        scoped: dict[str, list[str]] = {}
        for policy_key in sorted(policies):
            policy = policies[policy_key]
            if policy.scope is Scope.GLOBAL:
                scoped.setdefault("", []).append(policy_key)
            elif policy.scope is Scope.NAMESPACE:
                scoped.setdefault(policy.namespace, []).append(policy_key)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            workloads=dict(workloads),
            services=dict(services),
            policies=dict(policies),
            workload_by_ip=by_ip,
            service_by_vip=by_vip,
            services_by_hostname={host: tuple(found) for host, found in by_host.items()},
            endpoints={key: tuple(found) for key, found in endpoints.items()},
            scoped_policies={scope: tuple(keys) for scope, keys in scoped.items()},
        )


_EMPTY = _Tables.build({}, {}, {})
_TABLE_OF_TYPE = {"workload": "workloads", "service": "services", "authorization": "policies"}


class ProxyState:
    """The mesh as this ztunnel sees it; see the module docstring for the contract."""

    def __init__(self, *, rng: random.Random | None = None, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self._tables = _EMPTY
        self._rng = rng if rng is not None else random.Random()
        self._cluster_domain = cluster_domain
        self.generation = 0
        self.synced_types: set[str] = set()

    # ------------------------------------------------------------------------------------ updates

    def apply(
        self,
        type_name: str,
        upserts: Sequence[Mapping[str, Any] | DiscoveryResource],
        removed_keys: Sequence[str] = (),
        *,
        replace: bool = False,
    ) -> ApplyResult:
        """Apply one push of ``type_name``: JSON bodies or decoded objects, plus keys to remove.

        ``replace=True`` is a full state (reconnect): resources not in ``upserts`` are dropped.
        """
        if type_name not in RESOURCE_TYPES:
            raise RejectedUpdate(
                f"unknown resource type {type_name!r} (expected one of {', '.join(RESOURCE_TYPES)})",
                type_name=type_name,
            )
        decoded, problems = _decode(type_name, upserts)
        removed_set = set(removed_keys)
        problems += [f"{key} is both updated and removed in one push" for key in sorted(removed_set & set(decoded))]
        if problems:
            raise RejectedUpdate(f"{type_name} push rejected: " + "; ".join(problems), type_name=type_name)
        current: Mapping[str, DiscoveryResource] = getattr(self._tables, _TABLE_OF_TYPE[type_name])
        table: dict[str, DiscoveryResource] = {} if replace else dict(current)
        gone = tuple(sorted(key for key in removed_set if key in table))
        unknown = tuple(sorted(key for key in removed_set if key not in table))
        for key in gone:
            del table[key]
        table.update(decoded)
        tables = {name: getattr(self._tables, name) for name in ("workloads", "services", "policies")}
        tables[_TABLE_OF_TYPE[type_name]] = table
        self._commit(type_name, tables, {type_name})
        return ApplyResult(upserted=tuple(decoded), removed=gone, unknown_removals=unknown)

    def replace_all(
        self,
        *,
        workloads: Iterable[Workload],
        services: Iterable[Service],
        policies: Iterable[Authorization],
    ) -> None:
        """Swap in a complete state in one transaction (the local config file's path)."""
        tables: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for type_name, items in (("workload", workloads), ("service", services), ("authorization", policies)):
            table: dict[str, Any] = {}
            for item in items:
                key = resource_key(item)
                if key in table:
                    problems.append(f"{type_name} {key} is defined twice")
                table[key] = item
            tables[_TABLE_OF_TYPE[type_name]] = table
        if problems:
            raise RejectedUpdate("; ".join(problems), type_name="local config")
        self._commit("local config", tables, set(RESOURCE_TYPES))

    def _commit(self, what: str, tables: Mapping[str, Mapping[str, Any]], synced: set[str]) -> None:
        try:
            built = _Tables.build(tables["workloads"], tables["services"], tables["policies"])
        except ValueError as exc:
            raise RejectedUpdate(f"{what} rejected: {exc}", type_name=what) from None
        self._tables = built
        self.generation += 1
        self.synced_types |= synced

    # ------------------------------------------------------------------------------------ lookups

    def workloads(self) -> list[Workload]:
        return [self._tables.workloads[uid] for uid in sorted(self._tables.workloads)]

    def services(self) -> list[Service]:
        return [self._tables.services[key] for key in sorted(self._tables.services)]

    def policies(self) -> list[Authorization]:
        return [self._tables.policies[key] for key in sorted(self._tables.policies)]

    def workload(self, uid: str) -> Workload | None:
        return self._tables.workloads.get(uid)

    def service(self, key: str) -> Service | None:
        return self._tables.services.get(key)

    def policy(self, key: str) -> Authorization | None:
        return self._tables.policies.get(key)

    def workload_by_ip(self, ip: str, network: str = "") -> Workload | None:
        normal = _normal_ip(ip)
        return None if normal is None else self._tables.workload_by_ip.get((network, normal))

    def service_by_vip(self, ip: str, network: str = "") -> Service | None:
        normal = _normal_ip(ip)
        return None if normal is None else self._tables.service_by_vip.get((network, normal))

    def service_by_hostname(self, name: str, namespace: str | None = None) -> Service | None:
        """Resolve like a pod's resolv.conf: ``svc`` and ``svc.ns`` through the search path of
        ``namespace`` (``<ns>.svc.<domain>``, ``svc.<domain>``, ``<domain>``), then the name as given.
        Among services sharing a hostname, the one in ``namespace`` wins."""
        name = name.lower()
        if name.endswith("."):
            candidates = [name.rstrip(".")]
        else:
            search = ([f"{namespace}.svc.{self._cluster_domain}"] if namespace else []) + [
                f"svc.{self._cluster_domain}", self._cluster_domain]
            candidates = [f"{name}.{suffix}" for suffix in search] + [name]
        for candidate in candidates:
            found = self._tables.services_by_hostname.get(candidate)
            if found:
                return next((s for s in found if s.namespace == namespace), found[0])
        return None

    def host_addresses(self, hostname: str, network: str = "") -> tuple[str, ...]:
        """A fully qualified name's addresses for the DNS proxy (``dns.resolver.HostLookup``): the service's
        VIPs on ``network``, or for a headless service (no VIP) its healthy endpoints' IPs."""
        found = self._tables.services_by_hostname.get(hostname.lower().rstrip("."))
        if not found:
            return ()
        service = found[0]
        vips = tuple(vip.address for vip in service.vips if vip.network == network)
        if vips or service.vips:
            return vips
        return tuple(
            address
            for workload in self.endpoints(service)
            if workload.status is WorkloadStatus.HEALTHY and workload.network == network
            for address in workload.addresses
        )

    def endpoints(self, service: Service) -> tuple[Workload, ...]:
        """Workloads that list ``service`` in their ``services`` map, ordered by uid."""
        return self._tables.endpoints.get(resource_key(service), ())

    def local_workloads(self, node: str) -> list[Workload]:
        return [workload for workload in self.workloads() if workload.node == node]

    def policies_for(self, workload: Workload) -> list[Authorization]:
        """GLOBAL policies, NAMESPACE policies of its namespace, and those it lists (unknown keys skipped:
        a listed policy may not have been pushed yet)."""
        scoped = self._tables.scoped_policies
        keys = [*scoped.get("", ()), *scoped.get(workload.namespace, ()), *workload.authorization_policies]
        found = (self._tables.policies.get(key) for key in dict.fromkeys(keys))
        return [policy for policy in found if policy is not None]

    def snapshot(self) -> dict[str, Any]:
        """Everything known, in push JSON form, for ``/config_dump``."""
        return {
            "generation": self.generation,
            "synced": sorted(self.synced_types),
            "workloads": [to_json(w) for w in self.workloads()],
            "services": [to_json(s) for s in self.services()],
            "policies": [to_json(p) for p in self.policies()],
        }

    # ---------------------------------------------------------------------------- outbound routing

    def find_destination(
        self, address: str, port: int, source: Workload | None, *, rng: random.Random | None = None
    ) -> Destination:
        """Where a connection from ``source`` to ``address:port`` goes (``address`` an IP or hostname).

        Raises ``lb.NoHealthyEndpoints``/``lb.UnknownServicePort`` for a known service that cannot be
        served, and ``UnknownWaypoint`` when a waypoint is named but not known.
        """
        rng = rng if rng is not None else self._rng
        network = source.network if source is not None else ""
        ip = _normal_ip(address)
        if ip is not None:
            service = self._tables.service_by_vip.get((network, ip))
            if service is not None:
                return self._to_service(service, ip, port, source, rng)
            workload = self._tables.workload_by_ip.get((network, ip))
            if workload is not None:
                return self._to_workload(workload, ip, port, source, rng)
            return Destination(kind=DestinationKind.PASSTHROUGH, address=ip, port=port)
        service = self.service_by_hostname(address, source.namespace if source is not None else None)
        if service is not None:
            return self._to_service(service, address, port, source, rng)
        return Destination(kind=DestinationKind.PASSTHROUGH, address=address, port=port)

    def _to_service(
        self, service: Service, addressed: str, port: int, source: Workload | None, rng: random.Random
    ) -> Destination:
        if service.load_balancing is not None and service.load_balancing.mode is LoadBalancingMode.PASSTHROUGH:
            return Destination(kind=DestinationKind.PASSTHROUGH, address=addressed, port=port, service=service)
        if service.waypoint is not None and not self._is_waypoint(service.waypoint, source):
            network = source.network if source is not None else ""
            vip = next((v.address for v in service.vips if v.network == network), addressed)
            return self._via_waypoint(service.waypoint, host_port(vip, port), source, rng, service)
        chosen = lb.choose_endpoint(service, self.endpoints(service), port, rng, source=source)
        return _direct(chosen.workload, chosen.workload.addresses[0], chosen.target_port, service)

    def _to_workload(
        self, workload: Workload, ip: str, port: int, source: Workload | None, rng: random.Random
    ) -> Destination:
        if workload.waypoint is not None and not self._is_waypoint(workload.waypoint, source):
            return self._via_waypoint(workload.waypoint, host_port(ip, port), source, rng, None)
        return _direct(workload, ip, port, None)

    def _via_waypoint(
        self,
        gateway: GatewayAddress,
        authority: str,
        source: Workload | None,
        rng: random.Random,
        intended: Service | None,
    ) -> Destination:
        waypoint_service: Service | None = None
        workload: Workload | None = None
        address: str | None = None
        if gateway.hostname is not None:
            waypoint_service = self._tables.services.get(gateway.hostname.key())
        elif gateway.address is not None:
            ip = str(ipaddress.ip_address(gateway.address.address))
            waypoint_service = self._tables.service_by_vip.get((gateway.address.network, ip))
            workload = self._tables.workload_by_ip.get((gateway.address.network, ip))
            address = ip
        if waypoint_service is not None:
            port = gateway.hbone_mtls_port
            chosen = lb.choose_endpoint(
                waypoint_service, self.endpoints(waypoint_service), port, rng, source=source, require_port=False)
            workload, address = chosen.workload, chosen.workload.addresses[0]
        if workload is None or address is None:
            named = gateway.hostname.key() if gateway.hostname is not None else str(gateway.address)
            raise UnknownWaypoint(f"waypoint {named} not found", waypoint=named)
        sans = waypoint_service.subject_alt_names if waypoint_service is not None else ()
        return Destination(
            kind=DestinationKind.WAYPOINT,
            address=address,
            port=gateway.hbone_mtls_port,
            tunnel=TunnelProtocol.HBONE,
            authority=authority,
            workload=workload,
            service=intended,
            expected_identities=tuple(dict.fromkeys((workload.identity, *sans))),
        )

    def _is_waypoint(self, gateway: GatewayAddress, source: Workload | None) -> bool:
        """Traffic the waypoint itself sends must not loop back into it."""
        if source is None:
            return False
        if gateway.hostname is not None:
            return gateway.hostname.key() in source.services
        assert gateway.address is not None
        ip = str(ipaddress.ip_address(gateway.address.address))
        if ip in {str(ipaddress.ip_address(a)) for a in source.addresses}:
            return True
        service = self._tables.service_by_vip.get((gateway.address.network, ip))
        return service is not None and resource_key(service) in source.services


def _direct(workload: Workload, ip: str, port: int, service: Service | None) -> Destination:
    if workload.tunnel_protocol is TunnelProtocol.NONE:
        return Destination(kind=DestinationKind.DIRECT, address=ip, port=port, workload=workload, service=service)
    sans = service.subject_alt_names if service is not None else ()
    return Destination(
        kind=DestinationKind.DIRECT,
        address=ip,
        port=HBONE_PORT,
        tunnel=TunnelProtocol.HBONE,
        authority=host_port(ip, port),
        workload=workload,
        service=service,
        expected_identities=tuple(dict.fromkeys((workload.identity, *sans))),
    )


def _decode(
    type_name: str, upserts: Sequence[Mapping[str, Any] | DiscoveryResource]
) -> tuple[dict[str, DiscoveryResource], list[str]]:
    """Decode every upsert, collecting all problems rather than stopping at the first."""
    kind = RESOURCE_TYPES[type_name]
    decoded: dict[str, DiscoveryResource] = {}
    problems: list[str] = []
    for index, item in enumerate(upserts):
        if isinstance(item, Mapping):
            try:
                resource = decode(type_name, item)
            except DiscoveryDecodeError as exc:
                problems.append(f"resources[{index}]: {exc.message}")
                continue
        elif isinstance(item, kind):
            resource = item
        else:
            problems.append(f"resources[{index}]: expected a {type_name}, got {type(item).__name__}")
            continue
        key = resource_key(resource)
        if key in decoded:
            problems.append(f"resources[{index}]: {type_name} {key} appears twice")
        decoded[key] = resource
    return decoded, problems
