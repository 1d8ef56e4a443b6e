"""The waypoint view: everything one waypoint needs, already translated, plus its JSON push form.

A waypoint never reads user YAML. istiod_lite pushes one ``waypoint`` resource per waypoint (keyed
``namespace/name``) holding the services it serves (hostname, VIPs, ports with their application
protocol), their route tables, the clusters those routes name (policy and endpoints), the L7
authorization policies attached with ``targetRefs``, and the workloads it serves directly (for a
``workload``/``all`` waypoint). ``to_json``/``from_json`` are that resource's body; decoding is strict
(unknown keys fail) and re-validates every model object, so a bad push is a NACK, not a crash later.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from meshcore.errors import MeshError
from schemas.discovery import AppProtocol
from waypoint import model
from waypoint import view as process
from waypoint.authz import L7Policy

TYPE_NAME = "waypoint"


class WaypointViewDecodeError(MeshError):
    hint = "check the waypoint resource the control plane pushed ({key})"


@attrs.frozen(kw_only=True)
class ServedPort:
    port: int
    target_port: int = 0  # 0: per endpoint (a named targetPort)
    app_protocol: AppProtocol = AppProtocol.UNKNOWN


@attrs.frozen(kw_only=True)
class ServedService:
    name: str
    namespace: str
    hostname: str
    vips: tuple[str, ...] = ()
    ports: tuple[ServedPort, ...] = ()

    def port(self, number: int) -> ServedPort | None:
        return next((p for p in self.ports if p.port == number), None)


@attrs.frozen(kw_only=True)
class ServedWorkload:
    """A workload whose own address is bound to this waypoint (``istio.io/waypoint-for: workload|all``)."""

    uid: str
    addresses: tuple[str, ...]
    identity: str


@attrs.frozen(kw_only=True)
class Cluster:
    key: model.ClusterKey
    policy: model.ClusterPolicy = attrs.field(factory=model.ClusterPolicy)
    endpoints: tuple[model.Endpoint, ...] = ()


@attrs.frozen(kw_only=True)
class WaypointView:
    name: str
    namespace: str
    hostname: str
    identity: str
    traffic_type: str = "service"
    addresses: tuple[str, ...] = ()
    services: tuple[ServedService, ...] = ()
    route_tables: tuple[model.RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    policies: tuple[L7Policy, ...] = ()
    workloads: tuple[ServedWorkload, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def route_table(self, hostname: str, port: int) -> model.RouteTable | None:
        return next((t for t in self.route_tables if t.key == (hostname, port)), None)

    def cluster(self, key: model.ClusterKey) -> Cluster | None:
        return next((c for c in self.clusters if c.key == key), None)

    def service(self, hostname: str) -> ServedService | None:
        return next((s for s in self.services if s.hostname == hostname), None)


# ------------------------------------------------------------------------------------- JSON form

_ACTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("weighted", model.WeightedDestinations),
    ("redirect", model.Redirect),
    ("direct_response", model.DirectResponse),
)


def _is_frozenset(kind: Any) -> bool:
    return bool(typing.get_origin(kind) is frozenset)


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=True, omit_if_default=True)

    def unstructure_set(values: frozenset[Any]) -> list[Any]:
        """Sets sorted, so the same view always has the same bytes (pushes compare bodies)."""
        plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
        return sorted(plain)

    converter.register_unstructure_hook_func(_is_frozenset, unstructure_set)

    def unstructure_action(action: model.RouteAction) -> dict[str, Any]:
        for tag, kind in _ACTIONS:
            if isinstance(action, kind):
                return {tag: converter.unstructure(action, kind)}
        raise TypeError(f"not a route action: {type(action).__name__}")

    def structure_action(value: Any, _type: Any) -> model.RouteAction:
        if not isinstance(value, Mapping) or len(value) != 1:
            raise TypeError(f"a route action is one of {', '.join(t for t, _ in _ACTIONS)}")
        ((tag, body),) = value.items()
        for known, kind in _ACTIONS:
            if tag == known:
                result: model.RouteAction = converter.structure(body, kind)
                return result
        raise TypeError(f"unknown route action {tag!r}")

    converter.register_unstructure_hook(model.RouteAction, unstructure_action)
    converter.register_structure_hook(model.RouteAction, structure_action)
    return converter


view_converter = _make_converter()


def to_json(view: WaypointView) -> dict[str, Any]:
    result: dict[str, Any] = view_converter.unstructure(view)
    return result


def from_json(data: Any) -> WaypointView:
    """Decode a pushed ``waypoint`` body; any problem is one :class:`WaypointViewDecodeError`."""
    key = f"{data.get('namespace')}/{data.get('name')}" if isinstance(data, Mapping) else "?"
    try:
        return view_converter.structure(data, WaypointView)
    except Exception as exc:  # cattrs groups errors; model validators raise MeshError/ValueError
        if isinstance(exc, cattrs.BaseValidationError):
            text = "; ".join(cattrs.transform_error(exc, path="waypoint"))
        else:
            text = str(exc)
        raise WaypointViewDecodeError(f"malformed waypoint resource: {text}", key=key) from exc


_PROTOCOLS = {
    AppProtocol.HTTP11: "http",
    AppProtocol.HTTP2: "http2",
    AppProtocol.GRPC: "grpc",
    AppProtocol.TCP: "tcp",
    AppProtocol.TLS: "tcp",
    AppProtocol.UNKNOWN: "http",
}


def to_process_view(view: WaypointView, *, version: str = "") -> process.WaypointView:
    """The pushed view → the view the process serves: one binding per service port, application protocols
    by the process's names (HTTP/1.1 ``http``, HTTP/2 ``http2``, gRPC ``grpc``, TCP/TLS ``tcp``; UNKNOWN is
    ``http``, which sniffs h2c — Istio's waypoints likewise treat unnamed ports as HTTP)."""
    return process.WaypointView(
        services=tuple(
            process.ServiceBinding(
                hostname=service.hostname,
                port=port.port,
                name=service.name,
                namespace=service.namespace,
                vips=service.vips,
                app_protocol=_PROTOCOLS[port.app_protocol],
            )
            for service in view.services
            for port in service.ports
        ),
        route_tables=view.route_tables,
        clusters=tuple(
            process.ClusterConfig(key=c.key, policy=c.policy, endpoints=c.endpoints) for c in view.clusters
        ),
        l7_policies=view.policies,
        version=version,
    )
