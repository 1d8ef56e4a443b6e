"""Spans, a tracer, and the in-memory ring of recent traces the admin API shows.

A waypoint makes one SERVER span per request and one CLIENT span per upstream attempt; the attempt's
context is what it propagates upstream (see :mod:`meshcore.telemetry.tracecontext`). Finished spans go
to the :class:`TraceRing` (always, so ``/debug/traces`` works without a collector) and, when an OTLP
endpoint is configured, to an exporter's non-blocking ``submit`` (:mod:`meshcore.telemetry.otlp`).

The clock is injectable (``time.time_ns`` by default) so tests can pin timestamps.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from meshcore.telemetry.tracecontext import (
    TraceContext,
    extract,
    inject,
    new_request_id,
    new_span_id,
    new_trace_id,
    parse_b3_multi,
    parse_b3_single,
    parse_traceparent,
)

__all__ = [
    "AttributeValue",
    "Span",
    "SpanKind",
    "SpanSink",
    "StatusCode",
    "TraceContext",
    "TraceRing",
    "Tracer",
    "extract",
    "inject",
    "new_request_id",
    "new_span_id",
    "new_trace_id",
    "parse_b3_multi",
    "parse_b3_single",
    "parse_traceparent",
]

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float] | Sequence[bool]


class SpanKind(enum.IntEnum):
    """OTLP's ``Span.SpanKind`` numbering (the JSON encoding uses these integers)."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    """OTLP's ``Status.StatusCode`` numbering."""

    UNSET = 0
    OK = 1
    ERROR = 2


@attrs.define
class Span:
    """One timed operation. Mutable until :meth:`end`; the tracer records it once ended."""

    name: str
    kind: SpanKind
    trace_id: str
    span_id: str
    start_unix_nano: int
    parent_span_id: str | None = None
    end_unix_nano: int | None = None
    attributes: dict[str, AttributeValue] = attrs.field(factory=dict)
    status_code: StatusCode = StatusCode.UNSET
    status_message: str = ""
    sampled: bool = True

    @property
    def ended(self) -> bool:
        return self.end_unix_nano is not None

    @property
    def duration_ms(self) -> float | None:
        if self.end_unix_nano is None:
            return None
        return (self.end_unix_nano - self.start_unix_nano) / 1e6

    def context(self) -> TraceContext:
        """The context to propagate to whatever this span calls."""
        return TraceContext(
            trace_id=self.trace_id,
            span_id=self.span_id,
            sampled=self.sampled,
            parent_span_id=self.parent_span_id,
        )

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_status(self, code: StatusCode, message: str = "") -> None:
        self.status_code = code
        self.status_message = message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for the admin API."""
        return {
            "name": self.name,
            "kind": self.kind.name,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "start_unix_nano": self.start_unix_nano,
            "end_unix_nano": self.end_unix_nano,
            "duration_ms": self.duration_ms,
            "attributes": {key: _plain(value) for key, value in self.attributes.items()},
            "status": {"code": self.status_code.name, "message": self.status_message},
        }


def _plain(value: AttributeValue) -> Any:
    return value if isinstance(value, str | bool | int | float) else list(value)


class SpanSink(Protocol):
    """Where finished spans go besides the ring; ``submit`` must never block (exporters drop instead)."""

    def submit(self, span: Span) -> bool: ...


class TraceRing:
    """The last ``max_traces`` traces (by trace id, oldest evicted first), at most ``max_spans`` each."""

    def __init__(self, max_traces: int = 100, max_spans_per_trace: int = 256) -> None:
        if max_traces < 1 or max_spans_per_trace < 1:
            raise ValueError("TraceRing sizes must be at least 1")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self._traces: OrderedDict[str, list[Span]] = OrderedDict()

    def add(self, span: Span) -> None:
        spans = self._traces.get(span.trace_id)
        if spans is None:
            spans = self._traces[span.trace_id] = []
            while len(self._traces) > self.max_traces:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(span.trace_id)
        if len(spans) < self.max_spans_per_trace:
            spans.append(span)

    def get(self, trace_id: str) -> list[Span]:
        return list(self._traces.get(trace_id, ()))

    def trace_ids(self) -> list[str]:
        """Most recent first."""
        return list(reversed(self._traces))

    def __len__(self) -> int:
        return len(self._traces)

    def to_list(self) -> list[dict[str, Any]]:
        """Most recent trace first, for ``/debug/traces``."""
        return [
            {"trace_id": trace_id, "spans": [span.to_dict() for span in self._traces[trace_id]]}
            for trace_id in self.trace_ids()
        ]


class Tracer:
    """Starts and finishes spans for one service; records finished spans in the ring and the sink."""

    def __init__(
        self,
        service_name: str,
        *,
        ring: TraceRing | None = None,
        sink: SpanSink | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.service_name = service_name
        self.ring = ring if ring is not None else TraceRing()
        self.sink = sink
        self._clock_ns = clock_ns

    def start_span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        *,
        parent: TraceContext | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Span:
        """A new span: a child of ``parent`` (same trace, parent id = its span id) or a new trace's root."""
        if parent is None:
            trace_id, parent_id, sampled = new_trace_id(), None, True
        else:
            trace_id, parent_id, sampled = parent.trace_id, parent.span_id, parent.sampled
        return Span(
            name=name,
            kind=kind,
            trace_id=trace_id,
            span_id=new_span_id(),
            parent_span_id=parent_id,
            start_unix_nano=self._clock_ns(),
            attributes=dict(attributes or {}),
            sampled=sampled,
        )

    def finish(self, span: Span, *, status: StatusCode | None = None, message: str = "") -> None:
        """End ``span`` (if not already ended) and record it. Unsampled spans are not exported."""
        if status is not None:
            span.set_status(status, message)
        if span.end_unix_nano is None:
            span.end_unix_nano = max(self._clock_ns(), span.start_unix_nano)
        self.ring.add(span)
        if self.sink is not None and span.sampled:
            self.sink.submit(span)
