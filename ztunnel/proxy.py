"""The ztunnel component: state, certificates, the HBONE pool, per-workload listeners, admin ports.

``Ztunnel.run`` brings a node's proxy up in the order that makes "ready" true when it is said:
state synced (the local config file, or istiod_lite's first full push), certificates loaded (files) or
fetched (istiod_lite's CA) for every local identity, the standard
ports bound, and for each local HBONE workload an inbound listener on ``podIP:15008`` and an
explicit-proxy listener on ``podIP:15080``. It then reports the bound addresses through
``task_status`` and keeps the listeners in step with state: :meth:`Ztunnel.state_changed` (called by
the local-config watcher now, by the push client later — both feed :class:`ProxyState` first) adds
listeners for new local workloads and stops those of workloads that left.

Shutdown is a drain (``/quitquitquit`` or SIGTERM): every listener stops accepting, open connections
get ``drain_seconds`` to finish, then everything still open is cancelled.

With ``--workers N`` this process is worker 0 of the node: it also starts and supervises workers
1..N-1 (:mod:`ztunnel.workers`) before saying it is ready, serves ``/metrics`` as the sum over all of
them, and drains them with itself.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
import structlog
import trio

from meshcore.admin.ports import ComponentPorts, StandardPorts
from meshcore.errors import MeshError
from meshcore.hbone.pool import HbonePool
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.manager import CertificateManager
from meshcore.identity.spiffe import Identity
from meshcore.push.client import PushClient
from meshcore.ready import format_address
from meshcore.telemetry.merge import merge_expositions
from meshcore.telemetry.metrics import Registry
from schemas.discovery import TunnelProtocol, Workload
from ztunnel import admin
from ztunnel.capture.inpod import InPodWorkloadManager
from ztunnel.capture.zds_server import ZdsServer
from ztunnel.cert_dir import load_cert_dir
from ztunnel.certificates import CertificateStore
from ztunnel.config import ZtunnelConfig
from ztunnel.dns.server import upstream_from_resolv_conf
from ztunnel.drain import Drain
from ztunnel.explicit_proxy import ExplicitProxyListener
from ztunnel.inbound import InboundListener
from ztunnel.inpod_proxy import InPodProxy
from ztunnel.local_config import load_local_config
from ztunnel.outbound import Outbound
from ztunnel.pushed import connect_control_plane, fetch_missing, follow_renewals
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionTelemetry
from ztunnel.workers import WorkerSet

log = structlog.get_logger("ztunnel.proxy")

LOCAL_CONFIG_POLL = 1.0

class StartupFailed(MeshError):
    """The node cannot serve; the message lists each cause with that cause's own hint."""


@attrs.frozen
class ListenerKey:
    """What a workload's listeners depend on: change any of it and they are restarted."""

    uid: str
    address: str
    identity: str


@attrs.define
class _Running:
    key: ListenerKey
    scope: trio.CancelScope
    hbone: str = ""
    explicit_proxy: str = ""


def desired_listeners(workloads: list[Workload]) -> dict[str, ListenerKey]:
    """Pure: the listener sets local ``workloads`` call for (HBONE workloads with an address)."""
    return {
        w.uid: ListenerKey(uid=w.uid, address=w.addresses[0], identity=w.identity)
        for w in workloads
        if w.tunnel_protocol is TunnelProtocol.HBONE and w.addresses
    }


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Ztunnel:
    def __init__(self, config: ZtunnelConfig, *, state: ProxyState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else ProxyState()
        self.registry = Registry()
        self.telemetry = ConnectionTelemetry(self.registry)
        self.drain = Drain()
        self.certificates = CertificateStore(self._load_certificate if config.cert_dir is not None else None)
        self.pool = HbonePool(self.certificates.pool_tls)
        self.outbound = Outbound(state=self.state, pool=self.pool, telemetry=self.telemetry, drain=self.drain)
        self.workers: WorkerSet | None = None
        if config.workers > 1:
            argv = [config.worker_argv(index) for index in range(1, config.workers)]
            self.workers = WorkerSet(argv, drain_seconds=config.drain_seconds)
        self.ports = ComponentPorts(
            registry=self.registry,
            ready=self.readiness,
            config_dump=self.config_dump,
            on_quit=self.drain.request,
            host=config.node_address,
            admin_host=config.node_address,
            ports=StandardPorts(config.admin_port, config.metrics_port, config.ready_port),
            metrics_source=self._node_metrics if self.workers is not None else None,
        )
        self._running: dict[str, _Running] = {}
        self._listener_errors: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._push: PushClient | None = None
        self._manager: CertificateManager | None = None
        self._changed = trio.Event()
        self.netns = config.capture == "netns"
        self.inpod: InPodProxy | None = None
        self.zds: ZdsServer | None = None
        if self.netns:
            assert config.zds_socket is not None
            upstream = _host_port(config.dns_upstream) if config.dns_upstream else upstream_from_resolv_conf()
            self.inpod = InPodProxy(node=config.node, state=self.state, certificates=self.certificates,
                                    telemetry=self.telemetry, drain=self.drain, dns_upstream=upstream)
            self._inpod_manager = InPodWorkloadManager(self.inpod.serve)
            self.zds = ZdsServer(config.zds_socket, self._inpod_manager)

    # ---------------------------------------------------------------------------- credentials

    def _load_certificate(self, identity: Identity) -> WorkloadCertificate:
        assert self.config.cert_dir is not None
        return load_cert_dir(self.config.cert_dir, [identity])[identity]

    async def _node_metrics(self) -> str:
        """This process's series plus every worker's, summed: one scrape target per node."""
        assert self.workers is not None
        return merge_expositions([self.registry.expose(), *await self.workers.metrics_texts()])

    # ---------------------------------------------------------------------------------- state

    def load_local_config(self) -> bool:
        """(Re)read ``--local-config`` if it changed; True when state was replaced."""
        path = self.config.local_config
        assert path is not None
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._config_stamp:
            return False
        loaded = load_local_config(path)
        self.state.replace_all(workloads=loaded.workloads, services=loaded.services, policies=loaded.policies)
        self._config_stamp = stamp
        for warning in loaded.warnings:
            log.warning("local_config_warning", path=str(path), warning=warning)
        log.info("state_loaded", source=str(path), generation=self.state.generation,
                 workloads=len(loaded.workloads), services=len(loaded.services), policies=len(loaded.policies))
        return True

    async def _watch_local_config(self) -> None:
        while True:
            await trio.sleep(LOCAL_CONFIG_POLL)
            try:
                changed = self.load_local_config()
            except (MeshError, OSError) as exc:  # keep the last good state, as a NACK would
                log.error("local_config_rejected", error=str(exc))
                continue
            if changed:
                await self.state_changed()

    def _notify_changed(self) -> None:
        self._changed.set()

    async def _follow_pushes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            await self.state_changed()

    def local_workloads(self) -> list[Workload]:
        return self.state.local_workloads(self.config.node)

    def _local_identities(self) -> set[Identity]:
        return {Identity.parse(w.identity) for w in self.local_workloads() if w.tunnel_protocol is TunnelProtocol.HBONE}

    async def state_changed(self) -> None:
        """Bring certificates and listeners in line with state (idempotent)."""
        assert self._nursery is not None
        local = self.local_workloads()
        # netns mode: pods' listeners live in their namespaces (ztunnel.inpod_proxy), none on pod IPs here
        desired = {} if self.netns else desired_listeners(local)
        if self._manager is not None:
            # Node authorization: certificates for exactly the identities of this node's HBONE workloads.
            wanted = {w.uid: Identity.parse(w.identity) for w in local if w.tunnel_protocol is TunnelProtocol.HBONE}
            self._manager.sync(wanted)
            self.certificates.forget(wanted.values())
            await fetch_missing(self.certificates, self._manager, set(wanted.values()))
        serving = [Identity.parse(key.identity) for key in desired.values()]
        if self.netns:
            serving = [Identity.parse(w.identity) for w in local if w.tunnel_protocol is TunnelProtocol.HBONE]
        problems = self.certificates.ensure(serving)
        for problem in problems.values():
            log.error("certificate_unavailable", error=problem)
        for uid, running in list(self._running.items()):
            if desired.get(uid) != running.key:
                running.scope.cancel()
                del self._running[uid]
                log.info("listeners_stopped", workload=uid)
        for uid, key in desired.items():
            if uid in self._running or not self.certificates.has(Identity.parse(key.identity)):
                continue
            workload = self.state.workload(uid)
            assert workload is not None
            try:
                self._running[uid] = await self._nursery.start(self._serve_workload, workload, key)
                self._listener_errors.pop(uid, None)
            except* OSError as group:
                error = group.exceptions[0]
                self._listener_errors[uid] = f"cannot listen on {key.address}: {error}"
                log.error("listener_failed", workload=uid, error=self._listener_errors[uid],
                          hint="in proxy mode every pod IP must be a loopback address (127.0.0.0/8)")

    async def _serve_workload(
        self, workload: Workload, key: ListenerKey, *, task_status: trio.TaskStatus[_Running]
    ) -> None:
        identity = Identity.parse(key.identity)
        inbound = InboundListener(
            workload,
            host=key.address,
            port=self.config.hbone_port,
            state=self.state,
            telemetry=self.telemetry,
            drain=self.drain,
            ssl_context=self.certificates.server_context(identity),
            verify_client=self.certificates.verify_client(identity),
            app_bind_address=self.config.node_address,
            reuse_port=self.config.reuse_port,
        )
        explicit = ExplicitProxyListener(
            workload, host=key.address, port=self.config.explicit_proxy_port, outbound=self.outbound, drain=self.drain,
            reuse_port=self.config.reuse_port,
        )
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                hbone = await nursery.start(inbound.run)
                proxy = await nursery.start(explicit.run)
                running = _Running(key=key, scope=scope, hbone=format_address(*hbone),
                                   explicit_proxy=format_address(*proxy))
                log.info("listeners_started", workload=workload.uid, hbone=running.hbone,
                         explicit_proxy=running.explicit_proxy)
                task_status.started(running)

    # ------------------------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        if self.config.local_config is not None:
            self.load_local_config()
        async with trio.open_nursery() as root:
            self._nursery = root
            await root.start(self.pool.run)
            if self.config.istiod is not None:
                self._push, self._manager = connect_control_plane(self.config, self.state, self._notify_changed)
                await root.start(self._manager.run)
                await root.start(self._push.run)
                log.info("waiting_for_first_push", istiod=self.config.istiod)
                await self._push.wait_synced()
                self._changed = trio.Event()  # the pushes so far are what state_changed() below applies
            await self.state_changed()
            missing = self.certificates.ensure([])
            if missing or self._listener_errors:
                problems = [*missing.values(), *self._listener_errors.values()]
                raise StartupFailed("ztunnel cannot start: " + "; ".join(problems))
            if self.workers is not None:
                await root.start(self.workers.run)
            if self.zds is not None:
                await root.start(self._inpod_manager.run)
                await root.start(self.zds.run)
            ports = await root.start(self.ports.run)
            if self._manager is not None:
                root.start_soon(self._follow_pushes)
                root.start_soon(follow_renewals, self.certificates, self._manager, self._local_identities)
            else:
                root.start_soon(self._watch_local_config)
            task_status.started(self.addresses(ports))
            await self.drain.wait_requested()
            log.info("drain_started", open_connections=self.drain.active, deadline_s=self.config.drain_seconds)
            async with trio.open_nursery() as draining:
                if self.workers is not None:
                    draining.start_soon(self.workers.stop)
                with trio.move_on_after(self.config.drain_seconds):
                    await self.drain.wait_idle()
            log.info("drain_finished", cancelled_connections=self.drain.active)
            self.ports.close(0)
            root.cancel_scope.cancel()

    def addresses(self, ports: dict[str, str]) -> dict[str, str]:
        """The ready line's addresses: admin ports plus ``hbone:<ns>/<name>`` and ``proxy:<ns>/<name>``."""
        out = {"admin": ports["admin"], "metrics": ports["metrics"], "ready": ports["readiness"]}
        for uid in sorted(self._running):
            workload = self.state.workload(uid)
            name = uid if workload is None else f"{workload.namespace}/{workload.name}"
            out[f"hbone:{name}"] = self._running[uid].hbone
            out[f"proxy:{name}"] = self._running[uid].explicit_proxy
        return out

    # ---------------------------------------------------------------------------------- admin

    def readiness(self) -> str | None:
        desired = {} if self.netns else desired_listeners(self.local_workloads())
        return admin.readiness(admin.ReadinessFacts(
            draining=self.drain.requested,
            generation=self.state.generation,
            missing_certificates=tuple(str(i) for i in self.certificates.ensure([])),
            pending_listeners=tuple(desired.keys() - self._running.keys()),
            listener_errors=self._listener_errors,
            pending_workers=tuple(self.workers.pending()) if self.workers is not None else (),
            waiting_for_node_agent=self.zds is not None and not self.zds.snapshot_received.is_set(),
        ))

    def config_dump(self) -> dict[str, Any]:
        pool = self.pool.statistics()
        return admin.config_dump(
            node=self.config.node,
            node_address=self.config.node_address,
            snapshot=self.state.snapshot(),
            certificates=self.certificates.dump(time.time()),
            listeners=[
                {"workload": uid, "hbone": r.hbone, "explicit_proxy": r.explicit_proxy}
                for uid, r in sorted(self._running.items())
            ],
            listener_errors=self._listener_errors,
            pool={"connections": pool.connections, "streams": pool.streams, "dials": pool.dials},
            draining=self.drain.requested,
            open_connections=self.drain.active,
            workers=self.workers.dump() if self.workers is not None else [],
            captured_pods=dict(self.inpod.serving) if self.inpod is not None else None,
            worker_index=self.config.worker_index,
        )
