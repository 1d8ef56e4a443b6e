"""Summing several workers' expositions into the node's one ``/metrics``."""

from __future__ import annotations

from meshcore.telemetry.merge import merge_expositions
from meshcore.telemetry.metrics import Registry


def worker_registry(opened: int, durations: list[float]) -> str:
    registry = Registry()
    counter = registry.counter("istio_tcp_connections_opened_total", "Opened.", ["reporter", "app"])
    counter.labels("source", "web app").inc(opened)
    histogram = registry.histogram("latency_ms", "Latency.", ["reporter"], buckets=[1, 10])
    for value in durations:
        histogram.labels("source").observe(value)
    return registry.expose()


def test_equal_series_are_summed_and_headers_written_once() -> None:
    merged = merge_expositions([worker_registry(3, [0.5, 5]), worker_registry(4, [20])])
    lines = merged.splitlines()
    assert lines.count("# HELP istio_tcp_connections_opened_total Opened.") == 1
    assert lines.count("# TYPE istio_tcp_connections_opened_total counter") == 1
    assert 'istio_tcp_connections_opened_total{reporter="source",app="web app"} 7' in lines
    assert 'latency_ms_bucket{reporter="source",le="1"} 1' in lines
    assert 'latency_ms_bucket{reporter="source",le="10"} 2' in lines
    assert 'latency_ms_bucket{reporter="source",le="+Inf"} 3' in lines
    assert 'latency_ms_count{reporter="source"} 3' in lines
    assert 'latency_ms_sum{reporter="source"} 25.5' in lines
    # every sample line stays with its family: HELP/TYPE of a family come before its samples
    assert lines.index("# TYPE latency_ms histogram") < lines.index('latency_ms_count{reporter="source"} 3')


def test_a_series_only_one_worker_has_is_kept() -> None:
    a = worker_registry(1, [])
    b = a + 'extra_total{x="y"} 2\n'
    merged = merge_expositions([a, b]).splitlines()
    assert 'extra_total{x="y"} 2' in merged


def test_a_single_exposition_is_unchanged_and_nothing_gives_nothing() -> None:
    text = worker_registry(2, [3])
    assert merge_expositions([text]) == text
    assert merge_expositions([]) == ""
