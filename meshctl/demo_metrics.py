"""What `meshctl demo` shows, computed from a waypoint's ``/metrics`` text — no I/O, no clock.

The demo's numbers must be the mesh's own: ``istio_requests_total`` (by ``response_code``) and the
``istio_request_duration_milliseconds`` histogram, as scraped. Two scrapes make a window; per
destination version it yields requests/s, share of traffic, error rate (5xx) and p50/p99, the
quantiles interpolated inside histogram buckets the way Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@attrs.frozen
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_exposition(text: str) -> list[Sample]:
    """Prometheus text format → samples (comments and malformed lines are skipped)."""
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        parsed = {key: _unescape(raw) for key, raw in _LABEL.findall(labels or "")}
        samples.append(Sample(name, parsed, number))
    return samples


def version_of(labels: Mapping[str, str]) -> str:
    """The destination's version: Istio's ``destination_version``, else its canonical revision or workload."""
    for key in ("destination_version", "destination_canonical_revision", "destination_workload"):
        value = labels.get(key, "unknown")
        if value and value not in ("unknown", "latest"):
            return value
    return "unknown"


@attrs.frozen
class VersionTotals:
    requests: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = attrs.field(factory=dict)  # upper bound → cumulative count


def totals_by_version(samples: Iterable[Sample], service: str | None = None) -> dict[str, VersionTotals]:
    """Counter and bucket totals per destination version (optionally for one destination service)."""
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        if service is not None and not sample.labels.get("destination_service", "").startswith(service):
            continue
        version = version_of(sample.labels)
        if sample.name == REQUESTS:
            requests[version] += sample.value
            if sample.labels.get("response_code", "").startswith("5"):
                errors[version] += sample.value
        elif sample.name == DURATION_BUCKET:
            bound = sample.labels.get("le", "+Inf")
            buckets[version][math.inf if bound == "+Inf" else float(bound)] += sample.value
    versions = set(requests) | set(buckets)
    return {v: VersionTotals(requests[v], errors[v], dict(buckets[v])) for v in versions}


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile``: linear inside the bucket holding rank q·count; None without data."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # Prometheus answers with the highest finite bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@attrs.frozen
class VersionRow:
    version: str
    requests: float
    rps: float
    share: float
    error_rate: float
    p50: float | None
    p99: float | None


def window(
    before: Mapping[str, VersionTotals], after: Mapping[str, VersionTotals], seconds: float
) -> list[VersionRow]:
    """Per version, what happened between two scrapes ``seconds`` apart (counter resets count from 0)."""
    deltas: dict[str, tuple[float, float, dict[float, float]]] = {}
    for version, now in after.items():
        then = before.get(version, VersionTotals())
        requests = now.requests - then.requests
        if requests < 0:  # the waypoint restarted: its counters began again
            then = VersionTotals()
            requests = now.requests
        errors = max(0.0, now.errors - then.errors)
        buckets = {b: max(0.0, c - then.buckets.get(b, 0.0)) for b, c in now.buckets.items()}
        deltas[version] = (requests, errors, buckets)
    total = sum(requests for requests, _, _ in deltas.values())
    rows = []
    for version in sorted(deltas):
        requests, errors, buckets = deltas[version]
        rows.append(
            VersionRow(
                version=version,
                requests=requests,
                rps=requests / seconds if seconds > 0 else 0.0,
                share=requests / total if total > 0 else 0.0,
                error_rate=errors / requests if requests > 0 else 0.0,
                p50=quantile(0.5, buckets),
                p99=quantile(0.99, buckets),
            )
        )
    return rows
