"""A component's three standard HTTP ports, started together and announced together.

Istio splits them on purpose and so do we (DESIGN §3): readiness on 15021 so a kubelet probe never
queues behind a large scrape, metrics on 15020 for Prometheus, and the admin port 15000 on localhost
only, because ``/quitquitquit`` and ``/logging`` change the process. Tests pass port 0 and read the
bound addresses from ``task_status``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from meshcore.admin.endpoints import MetricsSource, ReadinessCheck, mount_standard
from meshcore.admin.http import AdminServer
from meshcore.ready import format_address
from meshcore.telemetry.metrics import Registry
from meshcore.telemetry.tracing import TraceRing


@attrs.frozen
class StandardPorts:
    admin: int = 15000
    metrics: int = 15020
    readiness: int = 15021

    @classmethod
    def ephemeral(cls) -> StandardPorts:
        """Port 0 everywhere: let the kernel choose (tests, several meshes on one machine)."""
        return cls(0, 0, 0)


class ComponentPorts:
    """Admin (15000, localhost), metrics (15020) and readiness (15021) servers for one component."""

    def __init__(
        self,
        *,
        registry: Registry,
        ready: ReadinessCheck,
        config_dump: Callable[[], Any],
        on_quit: Callable[[], None],
        traces: TraceRing | None = None,
        host: str = "127.0.0.1",
        admin_host: str = "127.0.0.1",
        ports: StandardPorts = StandardPorts(),
        metrics_source: MetricsSource | None = None,
    ) -> None:
        self.host = host
        self.admin_host = admin_host
        self.ports = ports
        self.admin = mount_standard(
            AdminServer("admin"),
            registry=registry,
            metrics_source=metrics_source,
            ready=ready,
            config_dump=config_dump,
            on_quit=on_quit,
            traces=traces,
            log_control=True,
        )
        self.metrics = mount_standard(AdminServer("metrics"), registry=registry, metrics_source=metrics_source)
        self.readiness = mount_standard(AdminServer("readiness"), ready=ready)

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Start all three; report ``{"admin": "host:port", "metrics": ..., "readiness": ...}``."""
        async with trio.open_nursery() as nursery:
            admin = await nursery.start(self.admin.run, self.admin_host, self.ports.admin)
            metrics = await nursery.start(self.metrics.run, self.host, self.ports.metrics)
            readiness = await nursery.start(self.readiness.run, self.host, self.ports.readiness)
            task_status.started(
                {
                    "admin": format_address(*admin),
                    "metrics": format_address(*metrics),
                    "readiness": format_address(*readiness),
                }
            )

    def close(self, grace: float = 5.0) -> None:
        """Stop all three servers (each answers its in-flight requests first)."""
        for server in (self.admin, self.metrics, self.readiness):
            server.close(grace)
