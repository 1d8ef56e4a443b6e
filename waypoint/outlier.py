"""Outlier detection for one cluster: Envoy's consecutive-error ejection, driven by explicit time.

What Envoy does (and so what Istio's ``outlierDetection`` means):

* Every upstream result is reported per endpoint. Without ``split_external_local_origin_errors``
  (Istio's default) local failures count as the status the router would have answered with: a connect
  failure or reset as 503, a timeout as 504 (:attr:`UpstreamFailure.status`). A 5xx bumps the
  consecutive-5xx counter, and a 502/503/504 also the consecutive-gateway-error counter; any other
  status resets both.
* Reaching ``consecutive5xxErrors`` or ``consecutiveGatewayErrors`` ejects the endpoint at once (not on
  the tick), unless ejected endpoints already make up ``maxEjectionPercent`` of the cluster — except
  that one endpoint may always be ejected when none is.
* An ejection lasts ``baseEjectionTime * n`` where ``n`` counts the endpoint's ejections, capped by
  ``max(maxEjectionTime, baseEjectionTime)``. The endpoint returns on the first ``interval`` tick
  after that time has passed. On each tick where an endpoint is in service, ``n`` is decremented, so
  an endpoint that stays healthy drifts back to the base ejection time.

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
    times_ejected: int = 0


@attrs.frozen(kw_only=True)
class EndpointHealth:
    """One endpoint's detector state, as /config_dump shows it."""

    endpoint: str
    ejected: bool
    ejected_until: float | None
    times_ejected: int
    consecutive_5xx: int
    consecutive_gateway_errors: int


@attrs.define
class _HostState:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_at: float | None = None
    ejection_duration: float = 0.0
    multiplier: int = 0


def _is_gateway_error(status: int) -> bool:
    return status in (502, 503, 504)


class OutlierDetector:
    def __init__(self, params: OutlierDetection) -> None:
        self.params = params
        self._hosts: dict[str, _HostState] = {}

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
            event = self._eject(endpoint, state, now, EjectionReason.CONSECUTIVE_GATEWAY_FAILURE)
            if event is not None:
                return event
        limit_5xx = self.params.consecutive_5xx
        if limit_5xx and state.consecutive_5xx >= limit_5xx:
            return self._eject(endpoint, state, now, EjectionReason.CONSECUTIVE_5XX)
        return None

    def _eject(
        self, endpoint: str, state: _HostState, now: float, reason: EjectionReason
    ) -> EjectionEvent | None:
        ejected_now = sum(1 for s in self._hosts.values() if s.ejected_at is not None)
        allowed = 100 * (ejected_now + 1) <= self.params.max_ejection_percent * len(self._hosts)
        if not allowed and ejected_now > 0:
            return None  # over maxEjectionPercent; Envoy still always allows the first ejection
        state.multiplier += 1
        cap = max(self.params.max_ejection_time, self.params.base_ejection_time)
        state.ejection_duration = min(self.params.base_ejection_time * state.multiplier, cap)
        state.ejected_at = now
        state.consecutive_5xx = 0
        state.consecutive_gateway = 0
        return EjectionEvent(
            endpoint=endpoint, ejected=True, at=now, reason=reason,
            duration=state.ejection_duration, times_ejected=state.multiplier,
        )

    # -- the interval sweep -------------------------------------------------------------------------

    def tick(self, now: float) -> list[EjectionEvent]:
        """The ``interval`` sweep: return endpoints whose ejection has run out, decay the others' count."""
        events = []
        for key, state in self._hosts.items():
            if state.ejected_at is not None:
                if now - state.ejected_at >= state.ejection_duration:
                    state.ejected_at = None
                    events.append(EjectionEvent(endpoint=key, ejected=False, at=now,
                                                times_ejected=state.multiplier))
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
                times_ejected=state.multiplier,
                consecutive_5xx=state.consecutive_5xx,
                consecutive_gateway_errors=state.consecutive_gateway,
            )
            for key, state in sorted(self._hosts.items())
        ]
