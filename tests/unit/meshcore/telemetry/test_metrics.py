"""The registry's exposition must be exactly what a Prometheus scraper parses (text format 0.0.4)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore.telemetry.metrics import (
    ENVOY_DEFAULT_BUCKETS,
    Histogram,
    MetricDefinitionError,
    MetricLabelError,
    Registry,
    escape_label_value,
    format_value,
)


def test_counter_and_gauge_exposition_is_exact() -> None:
    registry = Registry()
    opened = registry.counter("conns_total", "Connections opened", ("reporter", "source_workload"))
    active = registry.gauge("active_connections", "Connections open now")
    opened.labels("source", "client").inc()
    opened.labels("source", "client").inc(2)
    opened.labels("destination", "server").inc()
    gauge = active.labels()
    gauge.inc(5)
    gauge.dec(2)

    assert registry.expose() == (
        "# HELP conns_total Connections opened\n"
        "# TYPE conns_total counter\n"
        'conns_total{reporter="source",source_workload="client"} 3\n'
        'conns_total{reporter="destination",source_workload="server"} 1\n'
        "# HELP active_connections Connections open now\n"
        "# TYPE active_connections gauge\n"
        "active_connections 3\n"
    )


def test_histogram_exposition_is_exact_with_cumulative_buckets() -> None:
    registry = Registry()
    latency = registry.histogram("latency_ms", "Latency", ("code",), buckets=(1, 10, 100))
    child = latency.labels("200")
    for value in (0.5, 1, 7, 100, 250):
        child.observe(value)

    assert registry.expose() == (
        "# HELP latency_ms Latency\n"
        "# TYPE latency_ms histogram\n"
        'latency_ms_bucket{code="200",le="1"} 2\n'
        'latency_ms_bucket{code="200",le="10"} 3\n'
        'latency_ms_bucket{code="200",le="100"} 4\n'
        'latency_ms_bucket{code="200",le="+Inf"} 5\n'
        'latency_ms_sum{code="200"} 358.5\n'
        'latency_ms_count{code="200"} 5\n'
    )


@pytest.mark.parametrize(
    ("value", "bucket_bound"),
    [
        (0.0, 0.5),
        (0.5, 0.5),  # le: a value equal to a bound belongs to it
        (0.51, 1),
        (3, 5),
        (1000, 1000),
        (1000.01, 2500),
        (3_600_000, 3_600_000),
        (3_600_001, math.inf),
    ],
)
def test_envoy_default_bucket_placement(value: float, bucket_bound: float) -> None:
    histogram = Histogram("h", "h")
    child = histogram.labels()
    child.observe(value)
    first_bucket_with_it = next(bound for bound, count in child.cumulative() if count == 1)
    assert first_bucket_with_it == bucket_bound


def test_envoy_default_buckets_are_envoys() -> None:
    expected: list[float] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
    expected += [60000, 300000, 600000, 1800000, 3600000]
    assert list(ENVOY_DEFAULT_BUCKETS) == expected
    assert list(Histogram("d", "d").buckets) == expected


def test_default_histogram_renders_every_envoy_bound() -> None:
    registry = Registry()
    registry.histogram("d_ms", "d").labels().observe(42)
    bucket_lines = [line for line in registry.expose().splitlines() if line.startswith("d_ms_bucket")]
    les = [line.split('le="')[1].split('"')[0] for line in bucket_lines]
    assert les == [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ]  # fmt: skip


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    family = registry.counter("c_total", 'Help with \\ backslash\nand "quotes"', ("path",))
    family.labels('a"b\\c\nd').inc()
    assert registry.expose().splitlines() == [
        '# HELP c_total Help with \\\\ backslash\\nand "quotes"',
        "# TYPE c_total counter",
        'c_total{path="a\\"b\\\\c\\nd"} 1',
    ]
    assert escape_label_value("plain") == "plain"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (1e20, "1e+20"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_child_lookup_returns_the_same_series() -> None:
    family = Registry().counter("x_total", "x", ("a",))
    assert family.labels("1") is family.labels("1")
    assert family.labels("1") is not family.labels("2")


def test_wrong_label_count_names_the_expected_labels() -> None:
    family = Registry().counter("x_total", "x", ("reporter", "source_workload"))
    with pytest.raises(MetricLabelError, match=r"\['reporter', 'source_workload'\]"):
        family.labels("only-one")


def test_non_string_label_value_is_refused() -> None:
    family = Registry().counter("x_total", "x", ("code",))
    with pytest.raises(MetricLabelError):
        family.labels(200)  # type: ignore[arg-type]


def test_counters_refuse_to_go_down() -> None:
    child = Registry().counter("x_total", "x").labels()
    with pytest.raises(ValueError, match="only go up"):
        child.inc(-1)


@pytest.mark.parametrize(
    ("name", "labels", "buckets"),
    [
        ("bad-name", (), (1,)),
        ("ok", ("bad-label",), (1,)),
        ("ok", ("__reserved",), (1,)),
        ("ok", ("a", "a"), (1,)),
        ("ok", ("le",), (1,)),
        ("ok", (), (5, 1)),
        ("ok", (), ()),
    ],
)
def test_invalid_definitions_are_refused(
    name: str, labels: tuple[str, ...], buckets: tuple[float, ...]
) -> None:
    with pytest.raises(MetricDefinitionError):
        Histogram(name, "help", labels, buckets)


def test_registering_a_name_twice_is_refused() -> None:
    registry = Registry()
    registry.counter("x_total", "x")
    with pytest.raises(MetricDefinitionError, match="registered twice"):
        registry.gauge("x_total", "again")


def test_empty_registry_exposes_nothing_and_clear_forgets_series() -> None:
    registry = Registry()
    assert registry.expose() == ""
    family = registry.counter("x_total", "x", ("a",))
    family.labels("1").inc()
    family.clear()
    assert registry.expose() == "# HELP x_total x\n# TYPE x_total counter\n"
    assert registry.get("x_total") is family
    assert registry.families() == [family]


def _unescape_label_value(text: str) -> str:
    """The scraper's side of the escaping: ``\\\\``, ``\\"`` and ``\\n``."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            out.append({"\\": "\\", '"': '"', "n": "\n"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@given(st.text(max_size=40))
def test_any_label_value_survives_exposition(value: str) -> None:
    registry = Registry()
    registry.counter("x_total", "x", ("v",)).labels(value).inc()
    sample = registry.expose().split("\n")[2]  # the format separates lines by \n only
    assert "\n" not in sample
    assert sample.startswith('x_total{v="') and sample.endswith('"} 1')
    assert _unescape_label_value(sample[len('x_total{v="') : -len('"} 1')]) == value
