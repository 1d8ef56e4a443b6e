"""The demo's figures from Prometheus text: parsing, per-version totals, windows and quantiles."""

from __future__ import annotations

import math

import pytest

from meshctl.demo_metrics import (
    VersionTotals,
    parse_exposition,
    quantile,
    totals_by_version,
    version_of,
    window,
)

SVC = 'destination_service="search-api.prod.svc.cluster.local"'
OTHER = 'destination_service="other.prod.svc.cluster.local"'


def exposition(v1_ok: int, v2_ok: int, v2_503: int, v1_fast: int = 0) -> str:
    return f"""\
# HELP istio_requests_total The total number of requests
# TYPE istio_requests_total counter
istio_requests_total{{reporter="waypoint",{SVC},destination_version="v1",response_code="200"}} {v1_ok}
istio_requests_total{{reporter="waypoint",{SVC},destination_version="v2",response_code="200"}} {v2_ok}
istio_requests_total{{reporter="waypoint",{SVC},destination_version="v2",response_code="503"}} {v2_503}
istio_requests_total{{reporter="waypoint",{OTHER},destination_version="v1",response_code="200"}} 1000
istio_request_duration_milliseconds_bucket{{{SVC},destination_version="v1",response_code="200",le="1"}} {v1_fast}
istio_request_duration_milliseconds_bucket{{{SVC},destination_version="v1",response_code="200",le="10"}} {v1_ok}
istio_request_duration_milliseconds_bucket{{{SVC},destination_version="v1",response_code="200",le="+Inf"}} {v1_ok}
istio_request_duration_milliseconds_sum{{{SVC},destination_version="v1",response_code="200"}} 12.5
"""


def test_parse_skips_comments_and_bad_lines_and_unescapes_labels() -> None:
    samples = parse_exposition('# c\nx_total{a="q\\"uote",b="x\\\\y"} 3\nnot a sample\ny NaNx\nz 2.5e1\n')
    assert [(s.name, dict(s.labels), s.value) for s in samples] == [
        ("x_total", {"a": 'q"uote', "b": "x\\y"}, 3.0),
        ("z", {}, 25.0),
    ]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"destination_version": "v2", "destination_workload": "search-v2"}, "v2"),
        ({"destination_version": "unknown", "destination_canonical_revision": "v3"}, "v3"),
        ({"destination_canonical_revision": "latest", "destination_workload": "search-v1"}, "search-v1"),
        ({}, "unknown"),
    ],
)
def test_version_of(labels: dict[str, str], expected: str) -> None:
    assert version_of(labels) == expected


def test_totals_count_5xx_as_errors_for_the_chosen_service_only() -> None:
    totals = totals_by_version(parse_exposition(exposition(90, 4, 6)), service="search-api.prod.svc.cluster.local")
    assert totals["v1"].requests == 90 and totals["v1"].errors == 0
    assert totals["v2"].requests == 10 and totals["v2"].errors == 6
    assert totals["v1"].buckets == {1.0: 0, 10.0: 90, math.inf: 90}


def test_window_gives_rates_shares_and_error_rates_between_two_scrapes() -> None:
    parse = parse_exposition
    before = totals_by_version(parse(exposition(100, 5, 0)), service="search-api")
    after = totals_by_version(parse(exposition(290, 10, 0 + 5)), service="search-api")
    rows = {row.version: row for row in window(before, after, 2.0)}
    assert rows["v1"].requests == 190 and rows["v1"].rps == 95.0
    assert rows["v2"].requests == 10 and rows["v2"].error_rate == 0.5
    assert rows["v1"].share == pytest.approx(0.95) and rows["v2"].share == pytest.approx(0.05)


def test_a_counter_reset_counts_from_zero() -> None:
    rows = window({"v1": VersionTotals(requests=500)}, {"v1": VersionTotals(requests=20)}, 1.0)
    assert rows[0].requests == 20


def test_no_traffic_is_zeroes_not_a_division_error() -> None:
    rows = window({"v1": VersionTotals(requests=5)}, {"v1": VersionTotals(requests=5)}, 1.0)
    assert (rows[0].rps, rows[0].share, rows[0].error_rate, rows[0].p50) == (0.0, 0.0, 0.0, None)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {1.0: 0, 10.0: 100, math.inf: 100}, 5.5),  # rank 50 of 100 inside (1, 10]
        (0.99, {1.0: 50, 10.0: 100, math.inf: 100}, 9.82),
        (0.5, {1.0: 100, 10.0: 100, math.inf: 100}, 0.5),  # first bucket interpolates from 0
        (0.99, {5.0: 10, math.inf: 100}, 5.0),  # past the last finite bound: that bound
        (0.5, {}, None),
        (0.5, {1.0: 0, math.inf: 0}, None),
    ],
)
def test_quantile_like_histogram_quantile(q: float, buckets: dict[float, float], expected: float | None) -> None:
    result = quantile(q, buckets)
    assert result == (pytest.approx(expected) if expected is not None else None)
