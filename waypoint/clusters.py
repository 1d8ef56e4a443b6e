"""Per-cluster runtime state: the balancer, outlier detector and circuit breaker of each cluster.

The cores are sans-IO; this module keeps one instance of each per cluster across config updates (a
new view with the same policy keeps ejections, round-robin position and breaker counts, so a weight
change never resets health), feeds the outlier detector's interval sweep from a trio task, and renders
the state for ``/config_dump``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import attrs
import structlog
import trio

from waypoint.circuit_breaker import CircuitBreaker
from waypoint.lb import LoadBalancer, hash_key
from waypoint.model import ClusterKey, ClusterPolicy, Endpoint, UpstreamFailure
from waypoint.outlier import EjectionEvent, OutlierDetector
from waypoint.router import RequestInfo
from waypoint.view import ClusterConfig

log = structlog.get_logger("waypoint.clusters")


@attrs.define(eq=False)
class ClusterRuntime:
    key: ClusterKey
    policy: ClusterPolicy
    endpoints: tuple[Endpoint, ...]
    lb: LoadBalancer
    breaker: CircuitBreaker
    outlier: OutlierDetector | None

    @classmethod
    def create(cls, config: ClusterConfig) -> ClusterRuntime:
        policy = config.policy
        outlier = OutlierDetector(policy.outlier_detection) if policy.outlier_detection is not None else None
        runtime = cls(
            key=config.key,
            policy=policy,
            endpoints=config.endpoints,
            lb=LoadBalancer(policy, cluster=config.key.name),
            breaker=CircuitBreaker(policy.connection_pool),
            outlier=outlier,
        )
        runtime.set_endpoints(config.endpoints)
        return runtime

    def set_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = endpoints
        if self.outlier is not None:
            self.outlier.set_endpoints(e.key for e in endpoints)

    def choose(
        self, request: RequestInfo, source_ip: str, rng: random.Random, *, avoid: Iterable[str] = ()
    ) -> Endpoint:
        """The endpoint for the next attempt (raises ``NoHealthyUpstream`` → 503 UH)."""
        ejected = self.outlier.ejected if self.outlier is not None else frozenset()
        key = None
        if self.policy.consistent_hash is not None:
            name = self.policy.consistent_hash.query_parameter
            query = {name: value} if name and (value := request.query_param(name)) is not None else None
            key = hash_key(self.policy.consistent_hash, request.headers, source_ip, query)
        return self.lb.choose(self.endpoints, rng, ejected=ejected, hash_key=key, avoid=frozenset(avoid))

    def report(
        self, endpoint: Endpoint, now: float, *, status: int | None = None, failure: UpstreamFailure | None = None
    ) -> None:
        if self.outlier is None:
            return
        event = self.outlier.report(endpoint.key, now, status=status, failure=failure)
        if event is not None:
            _log_event(self.key, event)

    def sweep(self, now: float) -> None:
        if self.outlier is not None:
            for event in self.outlier.tick(now):
                _log_event(self.key, event)

    def dump(self, now: float) -> dict[str, Any]:
        health = {h.endpoint: h for h in self.outlier.health()} if self.outlier is not None else {}
        endpoints = []
        for endpoint in self.endpoints:
            state = health.get(endpoint.key)
            entry: dict[str, Any] = {
                "address": endpoint.key,
                "identity": endpoint.identity,
                "labels": dict(endpoint.labels),
                "weight": endpoint.weight,
                "active_requests": self.lb.active_requests(endpoint),
                "ejected": bool(state and state.ejected),
            }
            if state is not None:
                remaining = None if state.ejected_until is None else max(0.0, state.ejected_until - now)
                entry.update(
                    ejection_remaining_s=remaining,
                    ejections_total=state.total_ejections,
                    ejection_multiplier=state.ejection_multiplier,
                    consecutive_5xx=state.consecutive_5xx,
                )
            endpoints.append(entry)
        return {
            "name": self.key.name,
            "lb_policy": self.policy.lb.value,
            "circuit_breaker": attrs.asdict(self.breaker.stats()),
            "outlier_detection": (
                attrs.asdict(self.policy.outlier_detection) if self.policy.outlier_detection else None
            ),
            "endpoints": endpoints,
        }


def _log_event(key: ClusterKey, event: EjectionEvent) -> None:
    log.info(
        "outlier_ejected" if event.ejected else "outlier_returned",
        cluster=key.name,
        endpoint=event.endpoint,
        reason=event.reason.value if event.reason else None,
        duration_s=event.duration,
    )


class Clusters:
    """All clusters of the current view, keyed by :class:`ClusterKey`."""

    def __init__(self) -> None:
        self._clusters: dict[ClusterKey, ClusterRuntime] = {}

    def get(self, key: ClusterKey) -> ClusterRuntime | None:
        return self._clusters.get(key)

    def __iter__(self) -> Any:
        return iter(list(self._clusters.values()))

    def update(self, configs: Iterable[ClusterConfig]) -> None:
        """Adopt a new set of clusters; a cluster whose policy is unchanged keeps its runtime state."""
        fresh: dict[ClusterKey, ClusterRuntime] = {}
        for config in configs:
            current = self._clusters.get(config.key)
            if current is not None and current.policy == config.policy:
                current.set_endpoints(config.endpoints)
                fresh[config.key] = current
            else:
                fresh[config.key] = ClusterRuntime.create(config)
        self._clusters = fresh

    def sweep(self, now: float) -> None:
        for cluster in self:
            cluster.sweep(now)

    async def run_sweeps(self, resolution: float = 0.1) -> None:
        """Envoy's outlier ``interval`` timer, per cluster: an ejected endpoint returns at the first sweep
        after its ejection time ran out, and each sweep decays the multiplier of healthy ones, so the
        sweep must run once per ``interval`` (checked every ``resolution`` seconds), not more often."""
        last: dict[ClusterKey, float] = {}
        while True:
            await trio.sleep(resolution)
            now = trio.current_time()
            for cluster in self:
                detection = cluster.policy.outlier_detection
                if detection is None:
                    continue
                if now - last.get(cluster.key, 0.0) >= detection.interval:
                    last[cluster.key] = now
                    cluster.sweep(now)

    def dump(self, now: float) -> list[dict[str, Any]]:
        return [cluster.dump(now) for cluster in self]
