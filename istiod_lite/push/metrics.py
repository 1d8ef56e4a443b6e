"""Push metrics under Istio's names, so dashboards built for istiod read ours.

``pilot_xds`` (connected proxies), ``pilot_xds_pushes`` (pushes sent, by type),
``pilot_total_xds_rejects`` (NACKs, by type) and ``pilot_proxy_convergence_time`` (seconds from a
version entering the catalog to a proxy ACKing it — the latency a user feels after an edit).
"""

from __future__ import annotations

from meshcore.telemetry.metrics import Registry

CONVERGENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PushMetrics:
    def __init__(self, registry: Registry) -> None:
        self.connected = registry.gauge("pilot_xds", "Proxies connected to this istiod_lite for config push.")
        self.pushes = registry.counter("pilot_xds_pushes", "Config pushes sent to proxies.", ["type"])
        self.rejects = registry.counter(
            "pilot_total_xds_rejects", "Config pushes proxies rejected (NACKed).", ["type"]
        )
        self.convergence = registry.histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a config version being published to a proxy acknowledging it.",
            ["type"],
            buckets=CONVERGENCE_BUCKETS,
        )
