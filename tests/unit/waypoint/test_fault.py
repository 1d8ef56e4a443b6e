"""Fault injection: Istio percentages sampled Envoy's way, flags DI/FI."""

from __future__ import annotations

import random

import pytest

from tests.unit.waypoint.binomial import interval_999
from waypoint.fault import NO_FAULT, decide
from waypoint.model import FaultAbort, FaultDelay, FaultPolicy, WaypointConfigError


def test_ten_percent_abort_within_999_binomial_interval() -> None:
    policy = FaultPolicy(abort=FaultAbort(http_status=503, percentage=10.0))
    rng = random.Random(1234)
    n = 4000
    aborted = 0
    for _ in range(n):
        decision = decide(policy, rng)
        if decision.aborts:
            aborted += 1
            assert decision.abort_status == 503 and decision.flags == ("FI",)
    low, high = interval_999(n, 0.10)
    assert low <= aborted <= high, (aborted, low, high)


def test_full_delay_applies_to_every_request_with_DI() -> None:
    policy = FaultPolicy(delay=FaultDelay(fixed_delay=2.5, percentage=100))
    rng = random.Random(0)
    for _ in range(100):
        decision = decide(policy, rng)
        assert decision.delay == 2.5 and decision.flags == ("DI",) and not decision.aborts


def test_delay_and_abort_are_sampled_independently() -> None:
    policy = FaultPolicy(delay=FaultDelay(fixed_delay=1.0, percentage=50), abort=FaultAbort(http_status=500,
                                                                                            percentage=50))
    rng = random.Random(8)
    seen = {decide(policy, rng).flags for _ in range(400)}
    assert seen == {(), ("DI",), ("FI",), ("DI", "FI")}


@pytest.mark.parametrize("percentage", [0.0, 0.0001], ids=["zero", "one-per-million-rounds-to-zero-per-10k"])
def test_tiny_percentages(percentage: float) -> None:
    policy = FaultPolicy(abort=FaultAbort(http_status=500, percentage=percentage))
    rng = random.Random(0)
    hits = sum(decide(policy, rng).aborts for _ in range(10_000))
    assert hits <= 3


def test_grpc_abort_carries_grpc_status() -> None:
    decision = decide(FaultPolicy(abort=FaultAbort(grpc_status=14, percentage=100)), random.Random(0))
    assert decision.aborts and decision.abort_grpc_status == 14 and decision.abort_status is None


def test_percentage_must_be_stated_because_istio_leaves_unset_to_envoy() -> None:
    with pytest.raises(TypeError, match="percentage"):
        FaultAbort(http_status=500)  # type: ignore[call-arg]


def test_no_policy_no_fault() -> None:
    assert decide(None, random.Random(0)) is NO_FAULT and NO_FAULT.flags == ()


@pytest.mark.parametrize("bad", [
    lambda: FaultAbort(percentage=10),
    lambda: FaultAbort(http_status=503, grpc_status=14, percentage=1),
    lambda: FaultAbort(http_status=99, percentage=1),
    lambda: FaultDelay(fixed_delay=1, percentage=101),
], ids=["abort-without-status", "abort-with-both", "status-out-of-range", "percentage-over-100"])
def test_invalid_fault_config_is_rejected(bad: object) -> None:
    with pytest.raises(WaypointConfigError):
        bad()  # type: ignore[operator]
