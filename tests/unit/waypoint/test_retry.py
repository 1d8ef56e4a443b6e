"""Retries: Envoy retry_on semantics, Istio attempts, budgets and back-off, plus a simulated loop."""

from __future__ import annotations

import itertools
import random

import pytest

from waypoint.circuit_breaker import CircuitBreaker, Resource
from waypoint.model import (
    ConnectionPoolSettings,
    RetryOn,
    RetryPolicy,
    UpstreamFailure,
    WaypointConfigError,
)
from waypoint.retry import (
    AttemptResult,
    RetryState,
    StopReason,
    Verdict,
    backoff_delay,
    failure_reply,
    is_retriable,
)


def policy(retry_on: str, attempts: int = 2) -> RetryPolicy:
    return RetryPolicy.from_istio(attempts, retry_on)


R = AttemptResult.response
F = AttemptResult.failed

RETRIABLE_CASES = [
    ("5xx-retries-500", "5xx", R(500), True),
    ("5xx-retries-connect-failure", "5xx", F(UpstreamFailure.CONNECT_FAILURE), True),
    ("5xx-retries-per-try-timeout", "5xx", F(UpstreamFailure.TIMEOUT), True),
    ("5xx-does-not-retry-404", "5xx", R(404), False),
    ("gateway-error-retries-503", "gateway-error", R(503), True),
    ("gateway-error-skips-500", "gateway-error", R(500), False),
    ("gateway-error-retries-reset", "gateway-error", F(UpstreamFailure.RESET), True),
    ("connect-failure-retries-connect-failure", "connect-failure", F(UpstreamFailure.CONNECT_FAILURE), True),
    ("connect-failure-skips-503-response", "connect-failure", R(503), False),
    ("connect-failure-skips-reset", "connect-failure", F(UpstreamFailure.RESET), False),
    ("reset-retries-reset", "reset", F(UpstreamFailure.RESET), True),
    ("reset-skips-5xx-response", "reset", R(500), False),
    ("refused-stream", "refused-stream", F(UpstreamFailure.REFUSED_STREAM), True),
    ("retriable-4xx-is-409-only", "retriable-4xx", R(409), True),
    ("retriable-4xx-skips-429", "retriable-4xx", R(429), False),
    ("istio-numeric-retryOn-is-a-retriable-status", "429", R(429), True),
    ("retriable-status-codes-exact", "503", R(502), False),
    ("grpc-unavailable", "unavailable", R(200, grpc_status=14), True),
    ("grpc-ok-not-retried", "unavailable", R(200, grpc_status=0), False),
    ("overflow-never-retried", "5xx,reset,connect-failure", F(UpstreamFailure.OVERFLOW), False),
]


@pytest.mark.parametrize(("retry_on", "result", "expected"), [c[1:] for c in RETRIABLE_CASES],
                         ids=[c[0] for c in RETRIABLE_CASES])
def test_retry_on_conditions(retry_on: str, result: AttemptResult, expected: bool) -> None:
    assert is_retriable(policy(retry_on), result) is expected


def test_istio_default_retry_on_when_unset() -> None:
    p = RetryPolicy.from_istio(2)
    assert RetryOn.CONNECT_FAILURE in p.retry_on and RetryOn.GRPC_UNAVAILABLE in p.retry_on
    assert p.retriable_status_codes == {503}
    assert is_retriable(p, R(503)) and not is_retriable(p, R(500))


def test_unknown_retry_on_is_rejected_with_the_known_list() -> None:
    with pytest.raises(WaypointConfigError, match="known: 5xx"):
        RetryPolicy.from_istio(2, "5xx,sometimes")


def test_attempts_counts_retries_so_total_sends_is_attempts_plus_one() -> None:
    state = RetryState(policy("5xx", attempts=3))
    rng = random.Random(0)
    verdicts = []
    for _ in range(5):
        decision = state.decide(R(503), rng)
        verdicts.append(decision.verdict)
        if decision.verdict is Verdict.DONE:
            assert decision.stop_reason is StopReason.LIMIT_EXCEEDED and decision.flags == ("URX",)
            break
    assert verdicts == [Verdict.RETRY] * 3 + [Verdict.DONE]
    assert state.attempt == 4 and state.attempt_header() == (b"x-envoy-attempt-count", b"4")


def test_attempts_zero_disables_retries() -> None:
    decision = RetryState(policy("5xx", attempts=0)).decide(R(503), random.Random(0))
    assert decision.verdict is Verdict.DONE and decision.stop_reason is StopReason.NO_POLICY


def test_no_retry_once_the_body_streamed_past_the_buffer() -> None:
    decision = RetryState(policy("5xx")).decide(R(503), random.Random(0), body_replayable=False)
    assert decision.verdict is Verdict.DONE and decision.stop_reason is StopReason.BODY_NOT_REPLAYABLE
    assert decision.flags == ()


def test_non_retriable_result_is_forwarded_without_flags() -> None:
    decision = RetryState(policy("5xx")).decide(R(404), random.Random(0))
    assert decision.verdict is Verdict.DONE and decision.flags == ()


def test_max_retries_budget_refuses_with_UO_and_is_released() -> None:
    cb = CircuitBreaker(ConnectionPoolSettings(max_retries=1))
    rng = random.Random(0)
    first, second = RetryState(policy("5xx"), breaker=cb), RetryState(policy("5xx"), breaker=cb)
    assert first.decide(R(503), rng).verdict is Verdict.RETRY
    refused = second.decide(R(503), rng)
    assert refused.stop_reason is StopReason.BUDGET_OVERFLOW and refused.flags == ("UO",)
    first.decide(R(200), rng)  # the retry completed: its budget unit is returned
    assert cb.in_use(Resource.RETRIES) == 0
    assert second.decide(R(503), rng).verdict is Verdict.RETRY
    second.finish()
    assert cb.in_use(Resource.RETRIES) == 0


@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5])
def test_backoff_is_fully_jittered_exponential_capped_at_ten_times_base(retry_number: int) -> None:
    p = policy("5xx")
    ceiling = {1: 0.025, 2: 0.05, 3: 0.1, 4: 0.2, 5: 0.25}[retry_number]
    rng = random.Random(retry_number)
    delays = [backoff_delay(p, retry_number, rng) for _ in range(2000)]
    assert all(0 <= d < ceiling for d in delays)
    assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling  # spread over the whole range


@pytest.mark.parametrize(("per_try", "route_timeout", "effective"), [
    (1.0, None, 1.0), (1.0, 5.0, 1.0), (5.0, 5.0, None), (None, 5.0, None),
], ids=["no-route-timeout", "shorter-than-route", "not-shorter-is-ignored", "unset"])
def test_per_try_timeout_only_counts_when_shorter_than_the_route_timeout(
    per_try: float | None, route_timeout: float | None, effective: float | None
) -> None:
    state = RetryState(RetryPolicy.from_istio(2, "5xx", per_try_timeout=per_try))
    assert state.per_try_timeout(route_timeout) == effective


def test_tried_endpoints_are_collected_for_the_previous_hosts_predicate() -> None:
    state = RetryState(policy("5xx"))
    state.decide(R(503), random.Random(0), endpoint="10.0.0.1:80")
    assert state.tried == ["10.0.0.1:80"]


@pytest.mark.parametrize(("failure", "status", "text"), [
    (UpstreamFailure.CONNECT_FAILURE, 503, "reset reason: connection failure"),
    (UpstreamFailure.TIMEOUT, 504, "upstream request timeout"),
    (UpstreamFailure.OVERFLOW, 503, "reset reason: overflow"),
])
def test_failure_replies_match_envoy_local_replies(failure: UpstreamFailure, status: int, text: str) -> None:
    code, body = failure_reply(failure)
    assert code == status and text in body


def test_attempts_3_turns_a_one_in_three_failing_backend_into_full_success() -> None:
    """The issue's acceptance loop: a backend failing every third request (503), attempts=3, 5xx."""
    backend_calls = itertools.count(1)

    def backend() -> int:
        return 503 if next(backend_calls) % 3 == 0 else 200

    rng = random.Random(42)
    statuses, attempts_seen = [], []
    for _ in range(300):
        state = RetryState(policy("5xx", attempts=3))
        while True:
            status = backend()
            decision = state.decide(R(status), rng)
            if decision.verdict is Verdict.DONE:
                break
            assert decision.backoff >= 0
        statuses.append(status)
        attempts_seen.append(state.attempt)
    assert statuses == [200] * 300
    upstream_sends = next(backend_calls) - 1
    assert upstream_sends == sum(attempts_seen)  # the attempt counts add up to what the backend saw
    assert sum(a - 1 for a in attempts_seen) == upstream_sends // 3  # one retry per backend failure
