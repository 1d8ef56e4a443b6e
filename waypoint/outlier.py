"""Outlier detection for one cluster: Envoy's consecutive-error ejection, driven by explicit time.

What Envoy does (and so what Istio's ``outlierDetection`` means):

* Every upstream result is reported per endpoint. Without ``split_external_local_origin_errors``
  (Istio's default) local failures count as the status the router would have answered with: a connect
  failure or reset as 503, a timeout as 504 (:attr:`UpstreamFailure.status`). A 5xx bumps the
  consecutive-5xx counter, and a 502/503/504 also the consecutive-gateway-error counter; any other
  status resets both.
* Reaching ``consecutive5xxErrors`` or ``consecutiveGatewayErrors`` ejects the endpoint at once (not on
  the tick) if the ejected share *including it* stays within ``maxEjectionPercent``: with the default
  10 %, ten endpoints allow one ejection and nine allow none (current Envoy; ``always_eject_one``
  is Envoy's ``always_eject_one_host`` escape). The counter that fired is reset either way.
* An ejection lasts ``baseEjectionTime * n`` where ``n`` counts the endpoint's ejections, capped by
  ``max(maxEjectionTime, baseEjectionTime)``. The endpoint returns on the first ``interval`` tick
  after that time has passed, with both counters reset. On each tick where an endpoint is in service,
  ``n`` is decremented, so an endpoint that stays healthy drifts back to the base ejection time.

The shell calls :meth:`OutlierDetector.report` after each attempt and :meth:`OutlierDetector.tick`
every ``interval``; both take ``now`` so tests choose the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from waypoint.model import OutlierDetection, UpstreamFailure


class EjectionReason(enum.Enum):
    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"


@attrs.frozen(kw_only=True)
class EjectionEvent:
    """An ejection or a return to service, for the log (Envoy's outlier event log has the same facts)."""

    endpoint: str
    ejected: bool
    at: float
    reason: EjectionReason | None = None
    duration: float | None = None
    multiplier: int = 0


@attrs.frozen(kw_only=True)
class EndpointHealth:
    """One endpoint's detector state, as /config_dump shows it."""

    endpoint: str
    ejected: bool
    ejected_until: float | None
    ejection_multiplier: int
    total_ejections: int
    consecutive_5xx: int
    consecutive_gateway_errors: int


@attrs.define
class _HostState:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_at: float | None = None
    ejection_duration: float = 0.0
    multiplier: int = 0
    ejections: int = 0


def _is_gateway_error(status: int) -> bool:
    return status in (502, 503, 504)


class OutlierDetector:
    def __init__(self, params: OutlierDetection) -> None:
        self.params = params
        self._hosts: dict[str, _HostState] = {}
        self.overflows = 0

    # -- membership ---------------------------------------------------------------------------------

    def set_endpoints(self, keys: Iterable[str]) -> None:
        """Track exactly ``keys``; state of endpoints that stay is kept, departed ones are forgotten."""
        wanted = set(keys)
        for key in list(self._hosts):
            if key not in wanted:
                del self._hosts[key]
        for key in wanted:
            self._hosts.setdefault(key, _HostState())

    # -- results ------------------------------------------------------------------------------------

    def report(
        self, endpoint: str, now: float, *, status: int | None = None, failure: UpstreamFailure | None = None
    ) -> EjectionEvent | None:
        """Record one upstream result (a response status, or a local failure); may eject at once.

        An endpoint not yet known is tracked from here on (call :meth:`set_endpoints` on every
        endpoint update so the ``maxEjectionPercent`` share is computed over the real membership).

        A breaker overflow is the waypoint's own refusal and says nothing about the endpoint: ignored.
        """
        if (status is None) == (failure is None):
            raise ValueError("report exactly one of status= or failure=")
        if failure is UpstreamFailure.OVERFLOW:
            return None
        code = failure.status if failure is not None else status
        assert code is not None
        state = self._hosts.setdefault(endpoint, _HostState())
        if not 500 <= code <= 599:
            state.consecutive_5xx = 0
            state.consecutive_gateway = 0
            return None
        if state.ejected_at is not None:
            return None  # in-flight requests finishing on an ejected endpoint change nothing
        state.consecutive_5xx += 1
        if _is_gateway_error(code):
            state.consecutive_gateway += 1
        gateway_limit = self.params.consecutive_gateway_errors
        if gateway_limit and state.consecutive_gateway >= gateway_limit:
            state.consecutive_gateway = 0
            event = self._eject(endpoint, state, now, EjectionReason.CONSECUTIVE_GATEWAY_FAILURE)
            if event is not None:
                return event
        limit_5xx = self.params.consecutive_5xx
        if limit_5xx and state.consecutive_5xx >= limit_5xx:
            state.consecutive_5xx = 0
            return self._eject(endpoint, state, now, EjectionReason.CONSECUTIVE_5XX)
        return None

    def _eject(
        self, endpoint: str, state: _HostState, now: float, reason: EjectionReason
    ) -> EjectionEvent | None:
        ejected_now = sum(1 for s in self._hosts.values() if s.ejected_at is not None)
        allowed = 100 * (ejected_now + 1) <= self.params.max_ejection_percent * len(self._hosts)
        if not allowed and not (self.params.always_eject_one and ejected_now == 0):
            self.overflows += 1  # Envoy's ejections_overflow
            return None
        base = self.params.base_ejection_time
        cap = max(self.params.max_ejection_time, base)
        if base * state.multiplier < cap + base:  # Envoy stops growing it once base*n passes the cap
            state.multiplier += 1
        state.ejections += 1
        state.ejection_duration = min(base * state.multiplier, cap)
        state.ejected_at = now
        return EjectionEvent(
            endpoint=endpoint, ejected=True, at=now, reason=reason,
            duration=state.ejection_duration, multiplier=state.multiplier,
        )

    # -- the interval sweep -------------------------------------------------------------------------

    def tick(self, now: float) -> list[EjectionEvent]:
        """The ``interval`` sweep: return endpoints whose ejection has run out, decay the others' count."""
        events = []
        for key, state in self._hosts.items():
            if state.ejected_at is not None:
                if now - state.ejected_at >= state.ejection_duration:
                    state.ejected_at = None
                    state.consecutive_5xx = 0
                    state.consecutive_gateway = 0
                    events.append(EjectionEvent(endpoint=key, ejected=False, at=now,
                                                multiplier=state.multiplier))
            elif state.multiplier > 0:
                state.multiplier -= 1
        return events

    # -- queries ------------------------------------------------------------------------------------

    def is_ejected(self, endpoint: str) -> bool:
        state = self._hosts.get(endpoint)
        return state is not None and state.ejected_at is not None

    @property
    def ejected(self) -> frozenset[str]:
        return frozenset(k for k, s in self._hosts.items() if s.ejected_at is not None)

    def health(self) -> list[EndpointHealth]:
        return [
            EndpointHealth(
                endpoint=key,
                ejected=state.ejected_at is not None,
                ejected_until=(
                    None if state.ejected_at is None else state.ejected_at + state.ejection_duration
                ),
                ejection_multiplier=state.multiplier,
                total_ejections=state.ejections,
                consecutive_5xx=state.consecutive_5xx,
                consecutive_gateway_errors=state.consecutive_gateway,
            )
            for key, state in sorted(self._hosts.items())
        ]
