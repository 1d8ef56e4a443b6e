"""Outlier detection with explicit ``now`` values: each case pins Envoy's consecutive-error ejection."""

from __future__ import annotations

import pytest

from waypoint.model import OutlierDetection, UpstreamFailure
from waypoint.outlier import EjectionReason, OutlierDetector

HOSTS = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
BAD = HOSTS[0]


def detector(**kw: object) -> OutlierDetector:
    params = OutlierDetection(**{"max_ejection_percent": 100, **kw})  # type: ignore[arg-type]
    d = OutlierDetector(params)
    d.set_endpoints(HOSTS)
    return d


def fail(d: OutlierDetector, times: int, now: float, status: int = 500, host: str = BAD) -> list[object]:
    return [e for e in (d.report(host, now, status=status) for _ in range(times)) if e is not None]


def test_consecutive_5xx_ejects_at_the_threshold_inline() -> None:
    d = detector(consecutive_5xx=5)
    assert fail(d, 4, now=1.0) == [] and not d.is_ejected(BAD)
    events = fail(d, 1, now=1.5)
    assert d.is_ejected(BAD) and d.ejected == {BAD}
    assert events[0].reason is EjectionReason.CONSECUTIVE_5XX and events[0].duration == 30.0  # type: ignore[attr-defined]


def test_a_success_resets_the_consecutive_count() -> None:
    d = detector(consecutive_5xx=3)
    fail(d, 2, now=0.0)
    d.report(BAD, 0.1, status=200)
    fail(d, 2, now=0.2)
    assert not d.is_ejected(BAD)


def test_4xx_is_not_a_server_error_and_resets() -> None:
    d = detector(consecutive_5xx=2)
    fail(d, 1, now=0.0)
    d.report(BAD, 0.0, status=404)
    fail(d, 1, now=0.0)
    assert not d.is_ejected(BAD)


def test_local_connect_failures_count_as_5xx() -> None:
    d = detector(consecutive_5xx=3)
    for _ in range(3):
        d.report(BAD, 0.0, failure=UpstreamFailure.CONNECT_FAILURE)
    assert d.is_ejected(BAD)


def test_breaker_overflow_is_not_the_endpoints_fault() -> None:
    d = detector(consecutive_5xx=1)
    d.report(BAD, 0.0, failure=UpstreamFailure.OVERFLOW)
    assert not d.is_ejected(BAD)


@pytest.mark.parametrize(("status", "ejected"), [(503, True), (504, True), (502, True), (500, False)],
                         ids=["503-gateway", "504-gateway", "502-gateway", "500-not-gateway"])
def test_consecutive_gateway_errors_count_only_502_503_504(status: int, ejected: bool) -> None:
    d = detector(consecutive_5xx=None, consecutive_gateway_errors=2)
    events = fail(d, 2, now=0.0, status=status)
    assert d.is_ejected(BAD) is ejected
    if ejected:
        assert events[0].reason is EjectionReason.CONSECUTIVE_GATEWAY_FAILURE  # type: ignore[attr-defined]


def test_ejected_endpoint_returns_on_the_first_tick_after_base_ejection_time() -> None:
    d = detector(consecutive_5xx=5, interval=10.0, base_ejection_time=30.0)
    fail(d, 5, now=100.0)
    assert d.tick(110.0) == [] and d.tick(120.0) == [] and d.is_ejected(BAD)
    events = d.tick(130.0)
    assert [(e.endpoint, e.ejected) for e in events] == [(BAD, False)]
    assert not d.is_ejected(BAD)


def test_repeated_ejections_grow_base_times_count() -> None:
    d = detector(consecutive_5xx=1, base_ejection_time=30.0)
    first = fail(d, 1, now=0.0)[0]
    d.tick(30.0)
    second = fail(d, 1, now=31.0)[0]
    assert (first.duration, second.duration) == (30.0, 60.0)  # type: ignore[attr-defined]
    assert d.tick(80.0) == [] and d.is_ejected(BAD)  # 49 s < 60 s
    assert d.tick(91.0)[0].endpoint == BAD


def test_ejection_time_capped_by_max_ejection_time() -> None:
    d = detector(consecutive_5xx=1, base_ejection_time=30.0, max_ejection_time=45.0)
    now = 0.0
    durations = []
    for _ in range(3):
        event = fail(d, 1, now=now)[0]
        durations.append(event.duration)  # type: ignore[attr-defined]
        now += 100.0
        d.tick(now)
    assert durations == [30.0, 45.0, 45.0]


def test_healthy_ticks_decrement_the_multiplier() -> None:
    d = detector(consecutive_5xx=1, base_ejection_time=30.0)
    fail(d, 1, now=0.0)
    d.tick(30.0)  # returned (multiplier stays 1 on the returning tick)
    d.tick(40.0)  # healthy tick: multiplier 1 → 0
    event = fail(d, 1, now=41.0)[0]
    assert event.duration == 30.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("hosts", "percent", "ejectable"), [
    (10, 10, 1), (20, 10, 2), (9, 10, 0), (3, 34, 1), (3, 67, 2), (3, 100, 3),
], ids=["10-hosts-10pct-one", "20-hosts-10pct-two", "9-hosts-10pct-none", "3-hosts-34pct-one",
        "3-hosts-67pct-two", "3-hosts-100pct-all"])
def test_max_ejection_percent_counts_the_candidate(hosts: int, percent: int, ejectable: int) -> None:
    """Current Envoy: eject only if 100*(ejected+1)/hosts <= maxEjectionPercent."""
    d = OutlierDetector(OutlierDetection(consecutive_5xx=1, max_ejection_percent=percent))
    keys = [f"10.0.1.{i}:80" for i in range(hosts)]
    d.set_endpoints(keys)
    for key in keys:
        d.report(key, 0.0, status=503)
    assert len(d.ejected) == ejectable
    assert d.overflows == hosts - ejectable


def test_always_eject_one_lets_a_small_cluster_eject_its_first_endpoint() -> None:
    d = detector(consecutive_5xx=1, max_ejection_percent=10, always_eject_one=True)
    for host in HOSTS:
        d.report(host, 0.0, status=500)
    assert d.ejected == {BAD}


def test_refused_ejection_resets_the_counter_that_fired() -> None:
    d = detector(consecutive_5xx=2, max_ejection_percent=0)
    fail(d, 2, now=0.0)
    assert not d.is_ejected(BAD)
    assert {h.endpoint: h.consecutive_5xx for h in d.health()}[BAD] == 0


def test_health_snapshot_for_config_dump() -> None:
    d = detector(consecutive_5xx=2)
    fail(d, 2, now=5.0)
    fail(d, 1, now=5.0, host=HOSTS[1])
    health = {h.endpoint: h for h in d.health()}
    assert health[BAD].ejected and health[BAD].ejected_until == 35.0 and health[BAD].ejection_multiplier == 1
    assert health[BAD].total_ejections == 1
    assert not health[HOSTS[1]].ejected and health[HOSTS[1]].consecutive_5xx == 1


def test_set_endpoints_forgets_departed_and_keeps_state_of_others() -> None:
    d = detector(consecutive_5xx=1)
    fail(d, 1, now=0.0)
    d.set_endpoints([BAD, "10.0.0.9:80"])
    assert d.ejected == {BAD} and {h.endpoint for h in d.health()} == {BAD, "10.0.0.9:80"}


def test_report_needs_exactly_one_outcome() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        detector().report(BAD, 0.0)
