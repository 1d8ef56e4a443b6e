"""Fault injection decisions (Istio ``HTTPFaultInjection``, Envoy's fault filter).

Envoy samples the delay first and, after the delay, samples the abort independently; each uses a
per-million fraction (Istio's ``percentage.value`` is a double). A delayed request carries response
flag ``DI``, an aborted one ``FI``; both can apply to the same request ("DI,FI"). An aborted request
never reaches the upstream: the waypoint answers itself with the configured status (or, for gRPC,
HTTP 200 with ``grpc-status`` in a trailers-only response) and Envoy's body ``fault filter abort``.
"""

from __future__ import annotations

import random

import attrs

from waypoint.model import FaultPolicy, sampled

ABORT_BODY = "fault filter abort"


@attrs.frozen(kw_only=True)
class FaultDecision:
    delay: float | None = None
    abort_status: int | None = None
    abort_grpc_status: int | None = None

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.abort_grpc_status is not None

    @property
    def flags(self) -> tuple[str, ...]:
        return (("DI",) if self.delay is not None else ()) + (("FI",) if self.aborts else ())


NO_FAULT = FaultDecision()


def decide(policy: FaultPolicy | None, rng: random.Random) -> FaultDecision:
    """Sample the delay, then the abort, each by its own percentage."""
    if policy is None:
        return NO_FAULT
    delay = None
    if policy.delay is not None and sampled(policy.delay.percentage, rng):
        delay = policy.delay.fixed_delay
    abort_status = abort_grpc = None
    if policy.abort is not None and sampled(policy.abort.percentage, rng):
        abort_status, abort_grpc = policy.abort.http_status, policy.abort.grpc_status
    return FaultDecision(delay=delay, abort_status=abort_status, abort_grpc_status=abort_grpc)
