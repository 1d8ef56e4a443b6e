"""Inbound HBONE: a CONNECT to ``VIP:port`` → the service it names → the inner protocol → the forwarder.

The destination service is taken from the CONNECT ``:authority`` (the VIP and port the client dialled);
a VIP:port this waypoint does not serve is refused with 503 (unknown port) before any byte flows. The
inner protocol follows the service port's ``appProtocol``: ``http2``/``grpc`` are prior-knowledge h2c,
``tcp`` is copied to an endpoint with L4 handling only, and ``http`` (or nothing) sniffs the h2 preface
so both HTTP/1.1 and h2c work on the same port.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio

from meshcore.hbone.connect import ConnectRequest, ConnectStatus, IPAddress
from meshcore.hbone.copy import copy_bidirectional
from meshcore.hbone.errors import HboneError
from meshcore.hbone.server import Respond
from waypoint.clusters import Clusters
from waypoint.forwarder import Downstream, Forwarder
from waypoint.h2server import serve_http2
from waypoint.h2sniff import sniff_stream
from waypoint.http1 import serve_http1
from waypoint.lb import NoHealthyUpstream
from waypoint.messages import Request, Response
from waypoint.model import ClusterKey
from waypoint.router import RequestInfo
from waypoint.upstream import Upstream
from waypoint.view import WaypointView

log = structlog.get_logger("waypoint.inbound")


class Inbound:
    """The HBONE server's handler: one call per valid CONNECT, living as long as the tunnel."""

    def __init__(
        self, *, view: Callable[[], WaypointView], forwarder: Forwarder, clusters: Clusters, upstream: Upstream
    ) -> None:
        self._view = view
        self._forwarder = forwarder
        self._clusters = clusters
        self._upstream = upstream
        self._rng = random.Random()

    def serves(self, ip: IPAddress) -> bool:
        """Any VIP of a bound service (the port is checked per CONNECT, against the current view)."""
        address = str(ip)
        return any(address in service.vips for service in self._view().services)

    async def handle(self, request: ConnectRequest, respond: Respond) -> None:
        service = self._view().service_for(str(request.target_ip), request.target_port)
        if service is None:
            log.info("connect_unknown_service", authority=request.authority, peer=request.peer_identity)
            await respond(ConnectStatus.SERVICE_UNAVAILABLE)
            return
        stream = await respond(ConnectStatus.OK)
        if stream is None:
            return
        source_ip = str(request.forwarded_for[0]) if request.forwarded_for else request.peer_address
        downstream = Downstream(
            service=service, source_identity=request.peer_identity or None, source_ip=source_ip
        )
        if service.app_protocol == "tcp":
            await self._tcp(stream, downstream)
            return
        inner: trio.abc.Stream = stream
        if service.app_protocol in ("http2", "grpc"):
            protocol = "h2"
        else:
            protocol, inner = await sniff_stream(stream)
        if protocol == "h2":
            h2_downstream = attrs.evolve(downstream, protocol="HTTP/2")
            await serve_http2(inner, _bind(self._forwarder, h2_downstream), peer=request.peer_address)
        else:
            await serve_http1(inner, _bind(self._forwarder, downstream))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_eof()  # the client reads the last answer to its end, then the tunnel closes

    async def _tcp(self, stream: trio.abc.HalfCloseableStream, downstream: Downstream) -> None:
        service = downstream.service
        cluster = self._clusters.get(ClusterKey(hostname=service.hostname, port=service.port))
        if cluster is None:
            log.info("tcp_no_cluster", service=service.hostname, port=service.port)
            return
        info = RequestInfo(method="", path="", authority="", port=service.port)
        try:
            endpoint = cluster.choose(info, downstream.source_ip, self._rng)
        except NoHealthyUpstream:
            log.info("tcp_no_healthy_upstream", cluster=cluster.key.name)
            return
        try:
            async with self._upstream.tunnel(endpoint) as (_, upstream_stream):
                await copy_bidirectional(stream, upstream_stream)
        except HboneError as exc:
            log.info("tcp_upstream_failed", endpoint=endpoint.key, error=str(exc))


def _bind(forwarder: Forwarder, downstream: Downstream) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        return await forwarder.handle(request, downstream)

    return handler
