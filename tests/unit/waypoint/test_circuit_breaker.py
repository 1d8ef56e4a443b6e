"""Circuit breaking: each case pins how Envoy's thresholds behind Istio's connectionPool answer."""

from __future__ import annotations

import pytest

from waypoint.circuit_breaker import CircuitBreaker, Overflow, Resource, UpstreamPlan
from waypoint.model import ConnectionPoolSettings


def breaker(**kw: int) -> CircuitBreaker:
    return CircuitBreaker(ConnectionPoolSettings(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(("resource", "setting"), [
    (Resource.REQUESTS, "http2_max_requests"),
    (Resource.PENDING_REQUESTS, "http1_max_pending_requests"),
    (Resource.CONNECTIONS, "max_connections"),
    (Resource.RETRIES, "max_retries"),
], ids=["http2MaxRequests", "http1MaxPendingRequests", "maxConnections", "maxRetries"])
def test_limit_overflows_with_UO_and_release_readmits(resource: Resource, setting: str) -> None:
    cb = breaker(**{setting: 2})
    assert cb.try_acquire(resource) is None and cb.try_acquire(resource) is None
    overflow = cb.try_acquire(resource)
    assert overflow == Overflow(resource=resource, limit=2) and overflow.flag == "UO"
    assert cb.in_use(resource) == 2
    cb.release(resource)
    assert cb.try_acquire(resource) is None


def test_istio_default_is_unlimited() -> None:
    cb = breaker()
    for _ in range(10_000):
        assert cb.try_acquire(Resource.REQUESTS) is None


def test_release_without_acquire_is_a_bug_not_silently_negative() -> None:
    with pytest.raises(RuntimeError, match="never acquired"):
        breaker().release(Resource.CONNECTIONS)


def test_pool_uses_idle_connection_first() -> None:
    cb = breaker(max_connections=1, http1_max_pending_requests=1)
    assert cb.plan_upstream(idle_connection_available=True) is UpstreamPlan.USE_IDLE
    assert cb.stats().rq_pending_active == 0


def test_max_connections_makes_requests_wait_pending_then_pending_limit_overflows() -> None:
    """Istio's circuit-breaking demo: maxConnections 1 + http1MaxPendingRequests 1 → the third concurrent
    request overflows."""
    cb = breaker(max_connections=1, http1_max_pending_requests=1)
    assert cb.plan_upstream(idle_connection_available=False) is UpstreamPlan.OPEN_CONNECTION
    cb.release(Resource.PENDING_REQUESTS)  # connected: the first request is no longer pending
    assert cb.plan_upstream(idle_connection_available=False) is UpstreamPlan.WAIT_PENDING
    third = cb.plan_upstream(idle_connection_available=False)
    assert isinstance(third, Overflow) and third.resource is Resource.PENDING_REQUESTS
    stats = cb.stats()
    counts = (stats.cx_active, stats.rq_pending_active, stats.rq_pending_overflow, stats.cx_overflow)
    assert counts == (1, 1, 1, 1)


@pytest.mark.parametrize(("limit", "served", "exhausted"),
                         [(None, 10**6, False), (1, 1, True), (3, 2, False)],
                         ids=["unset-never", "one-request-per-connection", "below-limit"])
def test_max_requests_per_connection(limit: int | None, served: int, exhausted: bool) -> None:
    cb = CircuitBreaker(ConnectionPoolSettings(max_requests_per_connection=limit))
    assert cb.connection_exhausted(served) is exhausted
