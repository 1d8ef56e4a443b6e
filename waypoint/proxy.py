"""The waypoint component: identity, the HBONE listener, the view, clusters, upstream pool, admin ports.

:meth:`Waypoint.run` loads the certificate and the view (refusing to start if either is unusable),
binds HBONE on ``address:15008`` and the admin/metrics/readiness ports, and reports the bound
addresses. While running it re-reads ``--config`` when the file changes: a new view replaces the old
one atomically between requests (requests already routed finish on what they chose; cluster state of
unchanged clusters is kept), and a broken file leaves the last good view in force. ``/quitquitquit``
or :meth:`drain` GOAWAYs every tunnel (clients stop opening streams here), gives open requests
``min(drain_seconds, 1 s)`` to finish, then cancels what is left.
"""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import structlog
import trio

from meshcore.admin.ports import ComponentPorts, StandardPorts
from meshcore.hbone.pool import Connector, HbonePool, PoolKey
from meshcore.hbone.server import HboneServer, VerifyPeer
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.errors import IdentityError
from meshcore.identity.tls import TlsStream, contexts_for, load_cert_chain, verify_peer_client, verify_peer_server
from meshcore.net.netns import connect_tcp_from_netns, listen_tcp_in_netns, open_netns
from meshcore.ready import format_address
from meshcore.telemetry.metrics import Registry
from meshcore.telemetry.otlp import OtlpHttpExporter
from meshcore.telemetry.tracing import Tracer, TraceRing
from waypoint.admin import config_dump
from waypoint.clusters import Clusters
from waypoint.config import ConfigError, WaypointSettings
from waypoint.control_plane import ControlPlaneLink
from waypoint.forwarder import Forwarder
from waypoint.inbound import Inbound
from waypoint.telemetry import RequestTelemetry
from waypoint.upstream import Upstream
from waypoint.view import WaypointView, WaypointViewError, load_view

log = structlog.get_logger("waypoint.proxy")


def load_certificate(settings: WaypointSettings) -> WorkloadCertificate:
    chain, key, roots = settings.credential_files()
    try:
        cert = WorkloadCertificate.from_pem(chain.read_bytes(), key.read_bytes(), roots.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read certificate file {exc.filename}: {exc.strerror}",
                          detail=f"check {exc.filename}") from exc
    except IdentityError as exc:
        raise ConfigError(f"waypoint certificate unusable: {exc}", detail=f"check {chain}") from exc
    if cert.identity.uri != settings.identity:
        raise ConfigError(
            f"{chain} is a certificate for {cert.identity.uri}, not {settings.identity}",
            detail="--identity must match the certificate's URI SAN",
        )
    return cert


class Waypoint:
    def __init__(self, settings: WaypointSettings) -> None:
        self.settings = settings
        self.registry = Registry()
        self.traces = TraceRing()
        self.exporter = (
            OtlpHttpExporter(settings.otlp_endpoint, service_name="waypoint")
            if settings.otlp_endpoint else None
        )
        self.tracer = Tracer("waypoint", ring=self.traces, sink=self.exporter)
        self.clusters = Clusters()
        self._view = WaypointView()
        self._view_stamp: tuple[int, int] | None = None
        self._loaded_at: float | None = None
        self._quit = trio.Event()
        self._cert: WorkloadCertificate | None = None
        self._server_context: ssl.SSLContext | None = None
        self._netns_fd = open_netns(settings.netns) if settings.netns is not None else None
        self.pool = HbonePool(self._tls_for, connector=self._dialer())
        self.upstream = Upstream(self.pool, settings.identity)
        self.reloads = 0

    def _dialer(self) -> Connector | None:
        """Upstream HBONE connections: from the waypoint's namespace when it has one (netns mode)."""
        fd = self._netns_fd
        if fd is None:
            return None

        async def dial(host: str, port: int) -> trio.abc.Stream:
            return await connect_tcp_from_netns(fd, (host, port), mark=None)

        return dial

    async def _hbone_listeners(self) -> list[trio.SocketListener]:
        settings = self.settings
        if self._netns_fd is None:
            return await trio.open_tcp_listeners(settings.hbone_port, host=settings.address)
        sock = await listen_tcp_in_netns(self._netns_fd, settings.address, settings.hbone_port)
        return [trio.SocketListener(sock)]

    # ---------------------------------------------------------------------------------- the view

    @property
    def view(self) -> WaypointView:
        return self._view

    def apply_view(self, view: WaypointView) -> None:
        """Swap in ``view`` (cluster state kept where the cluster's policy did not change)."""
        self.clusters.update(view.clusters)
        self._view = view
        self._loaded_at = trio.current_time()
        self.reloads += 1
        log.info("view_applied", version=view.version, services=len(view.services),
                 clusters=len(view.clusters), routes=sum(len(t.routes) for t in view.route_tables))

    def reload_if_changed(self) -> bool:
        """Re-read ``--config`` if its mtime/size changed; True when a new view was applied."""
        path = self.settings.config
        if path is None:  # --istiod: the view is pushed
            return False
        try:
            stat = path.stat()
        except OSError as exc:
            log.warning("view_file_unreadable", path=str(path), error=exc.strerror)
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._view_stamp:
            return False
        self._view_stamp = stamp
        try:
            view = load_view(path)
        except WaypointViewError as exc:
            log.error("view_rejected", path=str(path), error=str(exc))
            return False
        self.apply_view(view)
        return True

    async def _watch_config(self) -> None:
        while True:
            await trio.sleep(self.settings.reload_interval)
            self.reload_if_changed()

    # ---------------------------------------------------------------------------------- identity

    def _tls_for(self, key: PoolKey) -> tuple[Any, VerifyPeer]:
        assert self._cert is not None
        _, client = contexts_for(self._cert)
        expected = key.destination_identities

        def verify(stream: TlsStream) -> str:
            return verify_peer_server(stream, expected).uri

        return client, verify

    # ---------------------------------------------------------------------------------- running

    def drain(self) -> None:
        self._quit.set()

    def ready(self) -> str | None:
        return None if self._loaded_at is not None else "no view loaded yet"

    def dump(self) -> dict[str, Any]:
        return config_dump(
            self._view, self.clusters, now=trio.current_time(), identity=self.settings.identity,
            source=str(self.settings.config or self.settings.istiod), loaded_at=self._loaded_at,
        )

    def _install_certificate(self, cert: WorkloadCertificate) -> None:
        """Use ``cert`` from now on; a renewal is loaded into the live server context (new handshakes)."""
        if cert.identity.uri != self.settings.identity:
            raise ConfigError(f"istiod_lite signed {cert.identity.uri}, not {self.settings.identity}",
                              detail="--identity must be the waypoint's own ServiceAccount identity")
        if self._server_context is not None:
            load_cert_chain(self._server_context, cert.chain_pem(), cert.key_pem())
            self._server_context.load_verify_locations(cadata=cert.roots_pem().decode())
        self._cert = cert

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        if settings.istiod is None:
            self._cert = load_certificate(settings)
            path = Path(str(settings.config))
            if not self.reload_if_changed():
                raise ConfigError(f"no usable view in {path}", detail=f"check {path} (see the log line above)")
        async with trio.open_nursery() as nursery:
            if settings.istiod is not None:  # certificate first (serving needs it); the view follows
                link = ControlPlaneLink(settings, on_view=self.apply_view, on_certificate=self._install_certificate)
                await nursery.start(link.run)
            assert self._cert is not None
            self._server_context, _ = contexts_for(self._cert)
            server_context = self._server_context
            trust_domain = self._cert.identity.trust_domain
            client_verify: VerifyPeer = lambda stream: verify_peer_client(stream, trust_domain).uri  # noqa: E731
            await nursery.start(self.pool.run)
            await nursery.start(self.upstream.run)
            if self.exporter is not None:
                await nursery.start(self.exporter.run)
            nursery.start_soon(self.clusters.run_sweeps)
            if settings.istiod is None:
                nursery.start_soon(self._watch_config)
            forwarder = Forwarder(
                view=lambda: self._view, clusters=self.clusters, upstream=self.upstream,
                telemetry=RequestTelemetry(self.registry, self.tracer), mirrors=nursery, rng=random.Random(),
            )
            inbound = Inbound(view=lambda: self._view, forwarder=forwarder, clusters=self.clusters,
                              upstream=self.upstream)
            server = HboneServer(server_context, client_verify, inbound.handle, serves=inbound.serves)
            ports = ComponentPorts(
                registry=self.registry, ready=self.ready, config_dump=self.dump, on_quit=self.drain,
                traces=self.traces, host=settings.admin_address or settings.address,
                admin_host=settings.admin_address or "127.0.0.1",
                ports=StandardPorts(settings.admin_port, settings.metrics_port, settings.ready_port),
            )
            admin = await nursery.start(ports.run)
            async with trio.open_nursery() as serving:
                hbone = await serving.start(server.serve_listeners, await self._hbone_listeners())
                task_status.started({"hbone": format_address(*hbone), **admin})
                await self._quit.wait()
                log.info("draining", seconds=settings.drain_seconds)
                server.drain()
                await trio.sleep(min(settings.drain_seconds, 1.0))
                serving.cancel_scope.cancel()
            ports.close()
            await self.upstream.close()
            nursery.cancel_scope.cancel()
