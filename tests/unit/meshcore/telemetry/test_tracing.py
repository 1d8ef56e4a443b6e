"""Spans, the tracer and the ring of recent traces, with a pinned clock."""

from __future__ import annotations

import itertools

import pytest

from meshcore.telemetry.tracecontext import TraceContext
from meshcore.telemetry.tracing import Span, SpanKind, StatusCode, Tracer, TraceRing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


class ListSink:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def submit(self, span: Span) -> bool:
        self.spans.append(span)
        return True


def fixed_clock(start: int = 1_700_000_000_000_000_000, step: int = 2_500_000) -> itertools.count[int]:
    return itertools.count(start, step)


def test_child_span_continues_the_incoming_trace() -> None:
    clock = fixed_clock()
    sink = ListSink()
    tracer = Tracer("waypoint", sink=sink, clock_ns=clock.__next__)
    server = tracer.start_span(
        "search-api.prod.svc.cluster.local:8080/*",
        SpanKind.SERVER,
        parent=TraceContext(TRACE, SPAN),
        attributes={"http.method": "GET"},
    )
    attempt = tracer.start_span("router outbound", SpanKind.CLIENT, parent=server.context())
    attempt.set_attribute("upstream.address", "10.0.0.7:8080")
    tracer.finish(attempt, status=StatusCode.ERROR, message="upstream reset")
    tracer.finish(server, status=StatusCode.OK)

    assert server.trace_id == attempt.trace_id == TRACE
    assert server.parent_span_id == SPAN
    assert attempt.parent_span_id == server.span_id
    assert server.start_unix_nano == 1_700_000_000_000_000_000
    assert server.duration_ms == 7.5  # started at tick 0, ended at tick 3 (2.5 ms per tick)
    assert (attempt.status_code, attempt.status_message) == (StatusCode.ERROR, "upstream reset")
    assert sink.spans == [attempt, server]
    assert [s.span_id for s in tracer.ring.get(TRACE)] == [attempt.span_id, server.span_id]
    doc = server.to_dict()
    assert doc["kind"] == "SERVER" and doc["status"] == {"code": "OK", "message": ""}
    assert doc["attributes"] == {"http.method": "GET"}


def test_root_span_starts_a_new_trace_and_unsampled_spans_are_not_exported() -> None:
    sink = ListSink()
    tracer = Tracer("ztunnel", sink=sink, clock_ns=fixed_clock().__next__)
    root = tracer.start_span("connect")
    assert root.parent_span_id is None and len(root.trace_id) == 32
    unsampled = tracer.start_span("x", parent=TraceContext(TRACE, SPAN, sampled=False))
    tracer.finish(root)
    tracer.finish(unsampled)
    assert sink.spans == [root]
    assert tracer.ring.get(TRACE) == [unsampled]  # still visible locally


def test_finish_keeps_an_explicit_end_time() -> None:
    tracer = Tracer("t", clock_ns=fixed_clock().__next__)
    span = tracer.start_span("s")
    span.end_unix_nano = span.start_unix_nano + 42
    tracer.finish(span)
    assert span.end_unix_nano == span.start_unix_nano + 42
    assert span.ended


def _span(trace_id: str, n: int) -> Span:
    return Span(
        name=f"s{n}", kind=SpanKind.INTERNAL, trace_id=trace_id, span_id=f"{n:016x}", start_unix_nano=n
    )


def test_ring_evicts_the_oldest_trace_and_caps_spans_per_trace() -> None:
    ring = TraceRing(max_traces=2, max_spans_per_trace=2)
    a, b, c = ("a" * 32, "b" * 32, "c" * 32)
    ring.add(_span(a, 1))
    ring.add(_span(b, 2))
    ring.add(_span(a, 3))  # touching a makes b the oldest
    ring.add(_span(c, 4))
    assert ring.trace_ids() == [c, a]
    assert len(ring) == 2
    ring.add(_span(a, 5))
    ring.add(_span(a, 6))
    assert [s.name for s in ring.get(a)] == ["s1", "s3"]
    assert ring.get(b) == []
    assert [t["trace_id"] for t in ring.to_list()] == [a, c]


def test_ring_refuses_zero_sizes() -> None:
    with pytest.raises(ValueError):
        TraceRing(max_traces=0)
