"""A small typed metrics registry with Prometheus text exposition (format 0.0.4).

Why our own instead of ``prometheus_client``: the data path increments counters for every chunk of
every tunnel, so the hot path must be a dictionary lookup done *once* per connection (label tuple →
child) followed by plain ``+=`` on a Python attribute. Everything runs on one trio thread, so there are
no locks. Exposition happens only when ``/metrics`` is scraped.

Usage::

    registry = Registry()
    opened = registry.counter("istio_tcp_connections_opened_total", "...", ("reporter", "source_workload"))
    child = opened.labels("source", "client")      # once per connection
    child.inc()                                    # per event: a plain add

Histograms default to Envoy's bucket boundaries (milliseconds), which is what Istio dashboards expect
for ``istio_request_duration_milliseconds`` and the request/response size histograms.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import ClassVar, Generic, TypeVar

from meshcore.errors import MeshError

#: Envoy's default histogram bucket upper bounds (``ms`` for durations; Envoy uses them for sizes too).
ENVOY_DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip

#: The ``Content-Type`` a Prometheus scraper expects for the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricDefinitionError(MeshError):
    """A metric was declared with an invalid name, label set or bucket list."""

    hint = "metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*; {detail}"


class MetricLabelError(MeshError):
    """A metric was used with the wrong number or type of label values."""

    hint = "{metric} takes labels {expected}; pass one string per label, in that order"


def format_value(value: float) -> str:
    """Render a sample value the way Prometheus parses it: integers without ``.0``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and newline (text format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape HELP text: backslash and newline only (quotes are literal there)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_block(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class CounterChild:
    """One labelled counter series. ``inc`` is a plain add; negative amounts are refused."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(f"counters only go up; got inc({amount})")
        self.value += amount


class GaugeChild:
    """One labelled gauge series: a value that goes up and down (active connections, queue depth)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class HistogramChild:
    """One labelled histogram series. Buckets are stored per bucket and made cumulative on exposition."""

    __slots__ = ("_bounds", "bucket_counts", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        # One slot per finite bound plus the +Inf overflow slot.
        self.bucket_counts: list[int] = [0] * (len(bounds) + 1)
        self.sum: float = 0
        self.count: int = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "less or equal").
        self.bucket_counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, cumulative count)`` pairs, ending with ``(+inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self._bounds, math.inf), self.bucket_counts, strict=True):
            running += n
            out.append((bound, running))
        return out


ChildT = TypeVar("ChildT", CounterChild, GaugeChild, HistogramChild)


class MetricFamily(Generic[ChildT]):
    """A named metric with a fixed, ordered label set; each distinct label tuple is one child series."""

    type_name: ClassVar[str] = "untyped"

    def __init__(self, name: str, help: str, label_names: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise MetricDefinitionError(f"invalid metric name {name!r}", detail=f"got {name!r}")
        names = tuple(label_names)
        for label in names:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise MetricDefinitionError(
                    f"invalid label name {label!r} on {name}", detail="names starting with __ are reserved"
                )
        if len(set(names)) != len(names):
            raise MetricDefinitionError(f"duplicate label names on {name}", detail=f"got {names}")
        self.name = name
        self.help = help
        self.label_names: tuple[str, ...] = names
        self._children: dict[tuple[str, ...], ChildT] = {}

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def labels(self, *values: str) -> ChildT:
        """The child for these label values (created on first use). Resolve once, then keep it."""
        try:
            return self._children[values]
        except KeyError:
            return self._create(values)

    def _create(self, values: tuple[str, ...]) -> ChildT:
        if len(values) != len(self.label_names) or not all(isinstance(v, str) for v in values):
            raise MetricLabelError(
                f"{self.name}: got label values {values!r}", metric=self.name, expected=list(self.label_names)
            )
        child = self._new_child()
        self._children[values] = child
        return child

    def children(self) -> Iterator[tuple[tuple[str, ...], ChildT]]:
        """Every series in creation order (stable output for scrapes and tests)."""
        return iter(list(self._children.items()))

    def clear(self) -> None:
        """Forget every series (e.g. when a workload goes away and its series should too)."""
        self._children.clear()

    def expose(self) -> list[str]:
        """The family's exposition lines: HELP, TYPE, then the samples."""
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type_name}"]
        for values, child in self.children():
            lines.extend(self._sample_lines(values, child))
        return lines

    def _sample_lines(self, values: tuple[str, ...], child: ChildT) -> list[str]:
        raise NotImplementedError


class Counter(MetricFamily[CounterChild]):
    type_name = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _sample_lines(self, values: tuple[str, ...], child: CounterChild) -> list[str]:
        return [f"{self.name}{_label_block(self.label_names, values)} {format_value(child.value)}"]


class Gauge(MetricFamily[GaugeChild]):
    type_name = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def _sample_lines(self, values: tuple[str, ...], child: GaugeChild) -> list[str]:
        return [f"{self.name}{_label_block(self.label_names, values)} {format_value(child.value)}"]


class Histogram(MetricFamily[HistogramChild]):
    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = ENVOY_DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, label_names)
        if "le" in self.label_names:
            raise MetricDefinitionError(f"{name} uses the label 'le'", detail="'le' is reserved for buckets")
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise MetricDefinitionError(
                f"{name}: buckets must be non-empty and strictly increasing", detail=f"got {list(buckets)}"
            )
        self.buckets = bounds

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.buckets)

    def _sample_lines(self, values: tuple[str, ...], child: HistogramChild) -> list[str]:
        names = self.label_names
        lines = []
        for bound, count in child.cumulative():
            le = 'le="' + format_value(bound) + '"'
            lines.append(f"{self.name}_bucket{_label_block(names, values, le)} {count}")
        labels = _label_block(names, values)
        lines.append(f"{self.name}_sum{labels} {format_value(child.sum)}")
        lines.append(f"{self.name}_count{labels} {child.count}")
        return lines


AnyFamily = Counter | Gauge | Histogram


class Registry:
    """The metrics one process exposes on ``/metrics``, in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, AnyFamily] = {}

    def register(self, family: AnyFamily) -> None:
        if family.name in self._families:
            raise MetricDefinitionError(
                f"metric {family.name} registered twice", detail="register each family once per registry"
            )
        self._families[family.name] = family

    def counter(self, name: str, help: str, label_names: Sequence[str] = ()) -> Counter:
        family = Counter(name, help, label_names)
        self.register(family)
        return family

    def gauge(self, name: str, help: str, label_names: Sequence[str] = ()) -> Gauge:
        family = Gauge(name, help, label_names)
        self.register(family)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = ENVOY_DEFAULT_BUCKETS,
    ) -> Histogram:
        family = Histogram(name, help, label_names, buckets)
        self.register(family)
        return family

    def get(self, name: str) -> AnyFamily | None:
        return self._families.get(name)

    def families(self) -> list[AnyFamily]:
        return list(self._families.values())

    def expose(self) -> str:
        """The whole registry in Prometheus text format 0.0.4 (ends with a newline)."""
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.expose())
        return "\n".join(lines) + "\n" if lines else ""
