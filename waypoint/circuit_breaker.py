"""Per-cluster circuit breaking: Envoy's resource counters behind Istio's ``connectionPool``.

Four gauges, each with an optional limit (``None`` is Istio's default of 2^32-1, i.e. unlimited):

==========================  ===================================  ========================================
Envoy threshold             Istio field                          counts
==========================  ===================================  ========================================
``max_connections``         ``tcp.maxConnections``               open upstream connections
``max_pending_requests``    ``http.http1MaxPendingRequests``     requests waiting for a connection
``max_requests``            ``http.http2MaxRequests``            active requests (HTTP/1.1 and HTTP/2)
``max_retries``             ``http.maxRetries``                  retries outstanding at once
==========================  ===================================  ========================================

Envoy never fails a request because ``max_connections`` is reached: the request waits as *pending*
for a connection to free up, and only when the pending queue is full is it answered ``503`` with
response flag ``UO``. :meth:`CircuitBreaker.plan_upstream` encodes that order for the pool shell.
A refused retry is not an error either: the last response is returned, flagged ``UO``.
"""

from __future__ import annotations

import enum

import attrs

from waypoint.model import ConnectionPoolSettings


class Resource(enum.Enum):
    CONNECTIONS = "connections"
    PENDING_REQUESTS = "pending_requests"
    REQUESTS = "requests"
    RETRIES = "retries"


@attrs.frozen(kw_only=True)
class Overflow:
    """A refused admission: which limit, at what value. Answer ``503`` with ``flag`` (``UO``)."""

    resource: Resource
    limit: int
    flag: str = "UO"

    @property
    def message(self) -> str:
        # Envoy's local reply body for a breaker overflow.
        return "upstream connect error or disconnect/reset before headers. reset reason: overflow"


class UpstreamPlan(enum.Enum):
    """What the pool should do with a request that has been admitted as active."""

    USE_IDLE = "use an idle connection"
    OPEN_CONNECTION = "open a new connection (the request is pending until it connects)"
    WAIT_PENDING = "wait as pending for a connection to free up"


@attrs.frozen(kw_only=True)
class BreakerStats:
    """Gauges and overflow counters, named as Envoy's cluster stats for /config_dump and /metrics."""

    cx_active: int
    rq_pending_active: int
    rq_active: int
    rq_retry_active: int
    cx_overflow: int
    rq_pending_overflow: int
    rq_overflow: int
    rq_retry_overflow: int


class CircuitBreaker:
    def __init__(self, settings: ConnectionPoolSettings) -> None:
        self.settings = settings
        self._in_use = dict.fromkeys(Resource, 0)
        self._overflows = dict.fromkeys(Resource, 0)

    def limit(self, resource: Resource) -> int | None:
        s = self.settings
        return {
            Resource.CONNECTIONS: s.max_connections,
            Resource.PENDING_REQUESTS: s.http1_max_pending_requests,
            Resource.REQUESTS: s.http2_max_requests,
            Resource.RETRIES: s.max_retries,
        }[resource]

    def in_use(self, resource: Resource) -> int:
        return self._in_use[resource]

    def can_acquire(self, resource: Resource) -> bool:
        limit = self.limit(resource)
        return limit is None or self._in_use[resource] < limit

    def try_acquire(self, resource: Resource) -> Overflow | None:
        """Take one unit of ``resource``; on overflow count it and return why (nothing is taken)."""
        if self.can_acquire(resource):
            self._in_use[resource] += 1
            return None
        self._overflows[resource] += 1
        limit = self.limit(resource)
        assert limit is not None
        return Overflow(resource=resource, limit=limit)

    def release(self, resource: Resource) -> None:
        if self._in_use[resource] <= 0:
            raise RuntimeError(f"circuit breaker: released {resource.value} that was never acquired")
        self._in_use[resource] -= 1

    def plan_upstream(self, *, idle_connection_available: bool) -> UpstreamPlan | Overflow:
        """Envoy's pool order for a request already holding a ``REQUESTS`` unit.

        Idle connection → use it. Otherwise the request becomes pending (``PENDING_REQUESTS`` is taken
        here and must be released when it gets a connection or gives up), and a new connection is
        opened if ``max_connections`` allows (``CONNECTIONS`` is taken too). A full pending queue
        overflows with ``UO``.
        """
        if idle_connection_available:
            return UpstreamPlan.USE_IDLE
        overflow = self.try_acquire(Resource.PENDING_REQUESTS)
        if overflow is not None:
            return overflow
        if self.try_acquire(Resource.CONNECTIONS) is None:
            return UpstreamPlan.OPEN_CONNECTION
        return UpstreamPlan.WAIT_PENDING

    def connection_exhausted(self, requests_served: int) -> bool:
        """``maxRequestsPerConnection``: retire a connection once it has served that many requests."""
        limit = self.settings.max_requests_per_connection
        return limit is not None and limit > 0 and requests_served >= limit

    def stats(self) -> BreakerStats:
        used, over = self._in_use, self._overflows
        return BreakerStats(
            cx_active=used[Resource.CONNECTIONS],
            rq_pending_active=used[Resource.PENDING_REQUESTS],
            rq_active=used[Resource.REQUESTS],
            rq_retry_active=used[Resource.RETRIES],
            cx_overflow=over[Resource.CONNECTIONS],
            rq_pending_overflow=over[Resource.PENDING_REQUESTS],
            rq_overflow=over[Resource.REQUESTS],
            rq_retry_overflow=over[Resource.RETRIES],
        )
