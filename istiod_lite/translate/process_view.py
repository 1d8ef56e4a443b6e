"""Adapter: the pushed :class:`~istiod_lite.translate.view.WaypointView` → the shape the waypoint
process loads today (:class:`waypoint.view.WaypointView`, one binding per service port).

The waypoint process was built against an interim file format; until it decodes the pushed
``waypoint`` resource itself, this is the one place the two shapes meet, so a runner can write a
translated view to the file ``python -m waypoint --config`` reads. Application protocols map to the
process' names: HTTP/1.1 → ``http``, HTTP/2 → ``http2``, gRPC → ``grpc``, TCP/TLS → ``tcp``; UNKNOWN
→ ``http``, which sniffs h2c — Istio's waypoints likewise inspect traffic of unnamed ports as HTTP.
"""

from __future__ import annotations

from istiod_lite.translate.view import WaypointView
from schemas.discovery import AppProtocol
from waypoint import view as process

_PROTOCOLS = {
    AppProtocol.HTTP11: "http",
    AppProtocol.HTTP2: "http2",
    AppProtocol.GRPC: "grpc",
    AppProtocol.TCP: "tcp",
    AppProtocol.TLS: "tcp",
    AppProtocol.UNKNOWN: "http",
}


def to_process_view(view: WaypointView, *, version: str = "") -> process.WaypointView:
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
