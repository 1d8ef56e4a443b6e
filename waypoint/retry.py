"""Retry decisions for one request, with Envoy's ``retry_on`` semantics and back-off.

Istio's ``retries.attempts`` becomes Envoy's ``num_retries``: the number of *retries*, so with
``attempts: 3`` a request is sent at most 4 times (the first try plus 3 retries), all inside the route
timeout. The attempt number (1 for the first try) is what Envoy sends upstream as
``x-envoy-attempt-count``.

What is retried (Envoy ``retry_on``):

* a response: ``5xx`` any 5xx; ``gateway-error`` 502/503/504; ``retriable-4xx`` 409;
  ``retriable-status-codes`` the listed codes; gRPC ``cancelled``/``deadline-exceeded``/``internal``/
  ``resource-exhausted``/``unavailable`` on a ``grpc-status`` in the response headers.
* no response: a reset, connect failure, refused stream or per-try timeout is retried under ``5xx``,
  ``gateway-error`` and ``reset``; a connect failure also under ``connect-failure``, a refused stream
  also under ``refused-stream``. The waypoint's own breaker overflow is never retried.

Never retried: once the request body has streamed past the replay buffer (the bytes are gone), and
once response headers went downstream (the shell does not ask then). Each retry holds one
``max_retries`` unit of the cluster's breaker while outstanding; a refused unit ends retrying with
flag ``UO``. Giving up on a retriable result because attempts ran out adds ``URX``.

Back-off is Envoy's fully jittered exponential: before retry *n* (1-based) wait a uniform random time
in ``[0, min(2^(n-1) * base, max))``, base 25 ms and max 10 times the base by default: 0-25 ms, 0-50,
0-100, 0-200, then 0-250 ms. (Envoy's router docs give ``[0, (2^n - 1) * base)``; the strategy in
Envoy's source doubles a running interval starting at the base, which is what is implemented.)
"""

from __future__ import annotations

import enum
import random

import attrs

from waypoint.circuit_breaker import CircuitBreaker, Resource
from waypoint.model import RetryOn, RetryPolicy, UpstreamFailure

GRPC_RETRY_CODES = {
    RetryOn.GRPC_CANCELLED: 1,
    RetryOn.GRPC_DEADLINE_EXCEEDED: 4,
    RetryOn.GRPC_RESOURCE_EXHAUSTED: 8,
    RetryOn.GRPC_INTERNAL: 13,
    RetryOn.GRPC_UNAVAILABLE: 14,
}
_ANY_RESET = frozenset({RetryOn.FIVE_XX, RetryOn.GATEWAY_ERROR, RetryOn.RESET})


@attrs.frozen(kw_only=True)
class AttemptResult:
    """How one upstream attempt ended: response headers (``status``) or a failure before them."""

    status: int | None = None
    grpc_status: int | None = None
    failure: UpstreamFailure | None = None

    def __attrs_post_init__(self) -> None:
        if (self.status is None) == (self.failure is None):
            raise ValueError("an attempt ends with exactly one of a status or a failure")

    @classmethod
    def response(cls, status: int, grpc_status: int | None = None) -> AttemptResult:
        return cls(status=status, grpc_status=grpc_status)

    @classmethod
    def failed(cls, failure: UpstreamFailure) -> AttemptResult:
        return cls(failure=failure)


class Verdict(enum.Enum):
    RETRY = "retry"
    DONE = "done"  # forward this result downstream


class StopReason(enum.Enum):
    NOT_RETRIABLE = "result is not retriable under retry_on"
    NO_POLICY = "route has no retry policy"
    LIMIT_EXCEEDED = "retry limit reached"
    BODY_NOT_REPLAYABLE = "request body already streamed past the replay buffer"
    BUDGET_OVERFLOW = "cluster max_retries reached"


@attrs.frozen(kw_only=True)
class RetryDecision:
    verdict: Verdict
    backoff: float = 0.0
    stop_reason: StopReason | None = None
    flags: tuple[str, ...] = ()


def is_retriable(policy: RetryPolicy, result: AttemptResult) -> bool:
    on = policy.retry_on
    if result.failure is not None:
        failure = result.failure
        if failure is UpstreamFailure.OVERFLOW:
            return False
        if on & _ANY_RESET:
            return True
        if failure is UpstreamFailure.CONNECT_FAILURE:
            return RetryOn.CONNECT_FAILURE in on
        if failure is UpstreamFailure.REFUSED_STREAM:
            return RetryOn.REFUSED_STREAM in on
        return False
    status = result.status
    assert status is not None
    if RetryOn.FIVE_XX in on and 500 <= status <= 599:
        return True
    if RetryOn.GATEWAY_ERROR in on and status in (502, 503, 504):
        return True
    if RetryOn.RETRIABLE_4XX in on and status == 409:
        return True
    if RetryOn.RETRIABLE_STATUS_CODES in on and status in policy.retriable_status_codes:
        return True
    if result.grpc_status is not None:
        return any(kind in on and code == result.grpc_status for kind, code in GRPC_RETRY_CODES.items())
    return False


def backoff_delay(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Seconds to wait before retry ``retry_number`` (1-based): uniform in [0, min(2^(n-1)*base, max))."""
    ceiling = min((1 << (retry_number - 1)) * policy.backoff_base, policy.effective_backoff_max)
    return rng.random() * ceiling


class RetryState:
    """One request's retry bookkeeping: :meth:`decide` after every attempt, :meth:`finish` at the end.

    ``attempt`` is the number of the attempt about to be (or last) sent: the ``x-envoy-attempt-count``.
    ``tried`` collects endpoint keys for the previous-hosts predicate.
    """

    def __init__(self, policy: RetryPolicy | None, *, breaker: CircuitBreaker | None = None) -> None:
        self.policy = policy
        self.breaker = breaker
        self.attempt = 1
        self.tried: list[str] = []
        self._holding_budget = False

    @property
    def retries_used(self) -> int:
        return self.attempt - 1

    def per_try_timeout(self, route_timeout: float | None) -> float | None:
        """The per-attempt deadline; Envoy ignores a per-try timeout not shorter than the route's."""
        per_try = self.policy.per_try_timeout if self.policy is not None else None
        if per_try is None or (route_timeout is not None and per_try >= route_timeout):
            return None
        return per_try

    def attempt_header(self) -> tuple[bytes, bytes]:
        return (b"x-envoy-attempt-count", str(self.attempt).encode())

    def decide(
        self,
        result: AttemptResult,
        rng: random.Random,
        *,
        body_replayable: bool = True,
        endpoint: str | None = None,
    ) -> RetryDecision:
        """Retry (after ``backoff`` seconds, with ``attempt`` advanced) or forward ``result``."""
        if endpoint is not None:
            self.tried.append(endpoint)
        self._release_budget()
        policy = self.policy
        if policy is None or policy.attempts == 0:
            return RetryDecision(verdict=Verdict.DONE, stop_reason=StopReason.NO_POLICY)
        if not is_retriable(policy, result):
            return RetryDecision(verdict=Verdict.DONE, stop_reason=StopReason.NOT_RETRIABLE)
        if not body_replayable:  # Envoy disables retries outright once the buffer overflowed: no URX
            return RetryDecision(verdict=Verdict.DONE, stop_reason=StopReason.BODY_NOT_REPLAYABLE)
        if self.retries_used >= policy.attempts:
            return RetryDecision(verdict=Verdict.DONE, stop_reason=StopReason.LIMIT_EXCEEDED, flags=("URX",))
        if self.breaker is not None:
            if self.breaker.try_acquire(Resource.RETRIES) is not None:
                return RetryDecision(
                    verdict=Verdict.DONE, stop_reason=StopReason.BUDGET_OVERFLOW, flags=("UO",)
                )
            self._holding_budget = True
        self.attempt += 1
        return RetryDecision(verdict=Verdict.RETRY, backoff=backoff_delay(policy, self.retries_used, rng))

    def finish(self) -> None:
        """Release the retry budget still held (the request is over, whatever happened)."""
        self._release_budget()

    def _release_budget(self) -> None:
        if self._holding_budget and self.breaker is not None:
            self.breaker.release(Resource.RETRIES)
        self._holding_budget = False


def failure_reply(failure: UpstreamFailure) -> tuple[int, str]:
    """Status and body Envoy answers when an attempt ends without a response and is not retried."""
    if failure is UpstreamFailure.TIMEOUT:
        return 504, "upstream request timeout"
    reason = {
        UpstreamFailure.CONNECT_FAILURE: "connection failure",
        UpstreamFailure.RESET: "connection termination",
        UpstreamFailure.REFUSED_STREAM: "remote refused stream reset",
        UpstreamFailure.OVERFLOW: "overflow",
    }[failure]
    return 503, f"upstream connect error or disconnect/reset before headers. reset reason: {reason}"
