"""Inbound HBONE for one local workload: ``podIP:15008`` → authorization → the app at ``podIP:port``.

The trio shell around :mod:`ztunnel.inbound_decision`. TLS, HTTP/2 and CONNECT validation belong to
:class:`meshcore.hbone.server.HboneServer`; this module owns the listener (so a drain can stop
accepting), decides each valid CONNECT, dials the application and copies both ways.

In proxy mode the app sees the connection coming from this ztunnel's node address (we bind the app-side
socket there), not from the client pod: without ``IP_TRANSPARENT`` in a pod netns the original source
IP cannot be preserved. Telemetry and the access log still carry the real source (``forwarded``, when
the workload owning that address is the peer that proved its identity).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio

from meshcore.hbone.connect import ConnectRequest, ConnectStatus, IPAddress
from meshcore.hbone.copy import CopyStats
from meshcore.hbone.server import HboneServer, Respond, VerifyPeer
from meshcore.net.listeners import open_tcp_listeners
from meshcore.ready import format_address
from schemas.discovery import Service, Workload, resource_key
from ztunnel.accept import bound_address, serve_until_drained
from ztunnel.drain import Drain
from ztunnel.inbound_decision import baggage_for, decide_inbound, forwarded_ip, source_ip
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionFacts, ConnectionTelemetry, copy_reporting

log = structlog.get_logger("ztunnel.inbound")

#: How the app is dialled: ``(app_ip, app_port, client_ip)``. Proxy mode connects from the node's address;
#: netns mode connects from inside the pod's namespace, transparently bound to ``client_ip`` so the app
#: sees its real peer.
AppConnector = Callable[[str, int, str], Awaitable[trio.abc.Stream]]

APP_CONNECT_TIMEOUT = 10.0


class InboundListener:
    """Serves HBONE for ``workload`` on ``host:port`` with that workload's certificate."""

    def __init__(
        self,
        workload: Workload,
        *,
        host: str,
        port: int,
        state: ProxyState,
        telemetry: ConnectionTelemetry,
        drain: Drain,
        ssl_context: ssl.SSLContext,
        verify_client: VerifyPeer,
        app_bind_address: str | None = None,
        listeners: Sequence[trio.SocketListener] = (),
        connect_app: AppConnector | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.workload = workload
        self._listeners = list(listeners)
        self._host = host
        self._port = port
        self._state = state
        self._telemetry = telemetry
        self._drain = drain
        self._app_bind_address = app_bind_address
        self._connect_app = connect_app or self._connect_from_node
        self._reuse_port = reuse_port  # shared with sibling worker processes (ztunnel.workers)
        self.address: tuple[str, int] | None = None
        self.server = HboneServer(ssl_context, verify_client, self.handle, serves=self._serves)

    def _serves(self, ip: IPAddress) -> bool:
        target = self._state.workload_by_ip(str(ip), self.workload.network)
        return target is not None and target.uid == self.workload.uid

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind ``host:port`` (or serve the listeners handed in) until drained or cancelled."""
        listeners = self._listeners or await open_tcp_listeners(
            self._port, host=self._host, reuse_port=self._reuse_port
        )
        self.address = bound_address(listeners)
        await serve_until_drained(
            listeners,
            self.server.serve_connection,
            self._drain,
            name=self._listen_name(),
            on_drained=self.server.drain,  # GOAWAY: peers' pools stop opening tunnels here, open ones finish
            task_status=task_status,
        )

    async def _connect_from_node(self, host: str, port: int, _client_ip: str) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port, local_address=self._app_bind_address)

    def _listen_name(self) -> str:
        host, port = self.address or (self._host, self._port)
        return format_address(host, port)

    async def handle(self, request: ConnectRequest, respond: Respond) -> None:
        """One valid CONNECT: authorize, dial the app, answer, copy."""
        target = self._state.workload_by_ip(str(request.target_ip), self.workload.network)
        policies = self._state.policies_for(target) if target is not None else []
        claimed = forwarded_ip(request)
        owner = self._state.workload_by_ip(claimed, self.workload.network) if claimed is not None else None
        verdict = decide_inbound(request, target=target, listener_uid=self.workload.uid, policies=policies,
                                 forwarded_owner=owner)
        src_ip = source_ip(request, owner)
        source = owner if owner is not None and src_ip == claimed else None
        port = request.forwarded_for[1] if request.forwarded_for is not None and source is not None else None
        service = self._addressed_service(request, target)
        facts = ConnectionFacts(
            direction="inbound",
            src_addr=format_address(src_ip, port) if port else (request.peer_address or src_ip),
            dst_addr=request.authority,
            source=source,
            source_identity=request.peer_identity or None,
            destination=target,
            destination_identity=target.identity if target is not None else None,
            service=service,
            hbone_addr=self._listen_name(),
            mutual_tls=True,
        )
        if not verdict.allowed:
            tracked = self._telemetry.track(facts, verdict.response_flags)
            log.info("inbound_rejected", status=int(verdict.status), reason=verdict.reason,
                     peer=request.peer_address, peer_identity=request.peer_identity, authority=request.authority)
            await respond(verdict.status)
            tracked.finish(result=str(int(verdict.status)), error=verdict.reason)
            return
        assert target is not None
        with self._drain.connection():
            await self._serve_allowed(request, respond, target, facts, src_ip)

    def _addressed_service(self, request: ConnectRequest, target: Workload | None) -> Service | None:
        """The service the client addressed, from ``forwarded: host=`` — if ``target`` really backs it."""
        if request.forwarded_host is None or target is None:
            return None
        service = self._state.service_by_hostname(request.forwarded_host.rstrip(".") + ".")
        return service if service is not None and resource_key(service) in target.services else None

    async def _serve_allowed(
        self, request: ConnectRequest, respond: Respond, target: Workload, facts: ConnectionFacts, client_ip: str
    ) -> None:
        app_ip = str(request.target_ip)
        try:
            with trio.fail_after(APP_CONNECT_TIMEOUT):
                app = await self._connect_app(app_ip, request.target_port, client_ip)
        except (OSError, trio.TooSlowError) as exc:
            error = f"connect to the app at {request.authority} failed: {exc or 'timed out'}"
            tracked = self._telemetry.track(facts, "CONNECT")
            log.info("inbound_app_connect_failed", authority=request.authority, error=error,
                     hint="is the application listening on its pod IP and that port?")
            await respond(ConnectStatus.SERVICE_UNAVAILABLE)
            tracked.finish(result=str(int(ConnectStatus.SERVICE_UNAVAILABLE)), error=error)
            return
        async with app:
            stream = await respond(ConnectStatus.OK, [("baggage", baggage_for(target))])
            if stream is None:  # the tunnel went away before we could answer
                return
            tracked = self._telemetry.track(facts)
            stats = CopyStats()
            try:
                await copy_reporting(tracked, stream, app, stats)
            finally:
                tracked.finish(
                    bytes_received=stats.downstream_to_upstream,
                    bytes_sent=stats.upstream_to_downstream,
                    result="reset" if stats.reset else "ok",
                    error=stats.error,
                )

