"""W3C traceparent and B3 parsing (including malformed input) and propagation."""

from __future__ import annotations

import re

import pytest

from meshcore.telemetry.tracecontext import (
    TRACE_HEADERS,
    MalformedTraceHeader,
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

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "05e3ac9a4f6e3b90"


def test_parse_traceparent_sampled_and_not() -> None:
    ctx = parse_traceparent(f"00-{TRACE}-{SPAN}-01", "vendor=abc")
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.tracestate) == (TRACE, SPAN, True, "vendor=abc")
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00").sampled is False
    assert parse_traceparent(f" 00-{TRACE}-{SPAN}-03 ").sampled is True  # other flag bits ignored


def test_future_version_is_read_by_its_first_four_fields() -> None:
    ctx = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-extra-stuff")
    assert (ctx.trace_id, ctx.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "4 dash-separated"),
        (f"00-{TRACE}-{SPAN}", "4 dash-separated"),
        (f"ff-{TRACE}-{SPAN}-01", "version"),
        (f"0-{TRACE}-{SPAN}-01", "version"),
        (f"00-{TRACE}-{SPAN}-01-extra", "exactly 4"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "trace id"),
        (f"00-{TRACE[:-1]}-{SPAN}-01", "trace id"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace id"),
        (f"00-{TRACE}-{'0' * 16}-01", "parent id"),
        (f"00-{TRACE}-{SPAN}z-01", "parent id"),
        (f"00-{TRACE}-{SPAN}-1", "flags"),
        (f"00-{TRACE}-{SPAN}-zz", "flags"),
    ],
)
def test_malformed_traceparent_names_the_bad_field(value: str, why: str) -> None:
    with pytest.raises(MalformedTraceHeader, match=why) as info:
        parse_traceparent(value)
    assert "starts a new trace" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{TRACE}-{SPAN}", TraceContext(TRACE, SPAN, sampled=True)),
        (f"{TRACE}-{SPAN}-1", TraceContext(TRACE, SPAN, sampled=True)),
        (f"{TRACE}-{SPAN}-0", TraceContext(TRACE, SPAN, sampled=False)),
        (f"{TRACE}-{SPAN}-d", TraceContext(TRACE, SPAN, sampled=True, debug=True)),
        (f"{TRACE}-{SPAN}-1-{PARENT}", TraceContext(TRACE, SPAN, sampled=True, parent_span_id=PARENT)),
        # 64-bit trace ids are left-padded to 128 bits
        (f"a3ce929d0e0e4736-{SPAN}-1", TraceContext("0" * 16 + "a3ce929d0e0e4736", SPAN)),
        (f"{TRACE.upper()}-{SPAN}-1", TraceContext(TRACE, SPAN)),
    ],
)
def test_parse_b3_single(value: str, expected: TraceContext) -> None:
    assert parse_b3_single(value) == expected


@pytest.mark.parametrize("value", ["0", "1", "d"])
def test_b3_sampling_state_alone_has_no_context(value: str) -> None:
    assert parse_b3_single(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "x",
        f"{TRACE}",
        f"{TRACE}-{SPAN}-2",
        f"{TRACE}-{SPAN}-1-{PARENT}-more",
        f"{TRACE[:20]}-{SPAN}-1",
        f"{'0' * 32}-{SPAN}-1",
        f"{TRACE}-{'0' * 16}-1",
        f"{TRACE}-{SPAN}-1-nothex0000000000",
    ],
)
def test_malformed_b3_single_is_refused(value: str) -> None:
    with pytest.raises(MalformedTraceHeader):
        parse_b3_single(value)


def test_parse_b3_multi() -> None:
    ctx = parse_b3_multi(
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-parentspanid": PARENT, "x-b3-sampled": "0"}
    )
    assert ctx == TraceContext(TRACE, SPAN, sampled=False, parent_span_id=PARENT)
    debug = parse_b3_multi({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"})
    assert (debug.sampled, debug.debug) == (True, True)
    assert parse_b3_multi({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "true"}).sampled


@pytest.mark.parametrize(
    "headers",
    [
        {"x-b3-traceid": TRACE},
        {"x-b3-spanid": SPAN},
        {"x-b3-traceid": "xyz", "x-b3-spanid": SPAN},
        {"x-b3-traceid": TRACE, "x-b3-spanid": "short"},
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-parentspanid": "0" * 16},
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "maybe"},
    ],
)
def test_malformed_b3_multi_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(MalformedTraceHeader):
        parse_b3_multi(headers)


def test_extract_prefers_traceparent_then_b3_then_multi() -> None:
    other = "11111111111111111111111111111111"
    all_three = [
        (b"Traceparent", f"00-{TRACE}-{SPAN}-01".encode()),
        (b"b3", f"{other}-{SPAN}-1".encode()),
        (b"x-b3-traceid", other.encode()),
        (b"x-b3-spanid", SPAN.encode()),
    ]
    ctx = extract(all_three)
    assert ctx is not None and ctx.trace_id == TRACE
    ctx = extract(all_three[1:])
    assert ctx is not None and ctx.trace_id == other and ctx.sampled
    ctx = extract({"x-b3-traceid": other, "x-b3-spanid": SPAN})
    assert ctx is not None and ctx.trace_id == other


def test_extract_ignores_malformed_headers_and_falls_back() -> None:
    assert extract({"traceparent": "garbage"}) is None
    fallback = extract({"traceparent": "garbage", "b3": f"{TRACE}-{SPAN}-1"})
    assert fallback is not None and fallback.trace_id == TRACE
    assert extract({"b3": "garbage", "x-b3-traceid": "nope", "x-b3-spanid": SPAN}) is None
    assert extract([]) is None


def test_child_keeps_the_trace_and_points_at_the_parent() -> None:
    parent = TraceContext(TRACE, SPAN, sampled=False, tracestate="k=v")
    child = parent.child()
    assert child.trace_id == TRACE
    assert child.parent_span_id == SPAN
    assert child.span_id != SPAN and re.fullmatch(r"[0-9a-f]{16}", child.span_id)
    assert (child.sampled, child.tracestate) == (False, "k=v")


def test_inject_round_trips_through_extract() -> None:
    ctx = TraceContext(TRACE, SPAN, sampled=True, parent_span_id=PARENT, tracestate="k=v")
    headers = inject(ctx, b3=True)
    assert {name for name, _ in headers} <= TRACE_HEADERS
    assert dict(headers)["traceparent"] == f"00-{TRACE}-{SPAN}-01"
    assert dict(headers)["x-b3-parentspanid"] == PARENT
    back = extract(headers)
    assert back is not None and (back.trace_id, back.span_id, back.sampled, back.tracestate) == (
        TRACE,
        SPAN,
        True,
        "k=v",
    )
    b3_only = [(name, value) for name, value in headers if name.startswith("x-b3")]
    assert extract(b3_only) == TraceContext(TRACE, SPAN, sampled=True, parent_span_id=PARENT)


def test_b3_single_rendering() -> None:
    assert TraceContext(TRACE, SPAN).b3() == f"{TRACE}-{SPAN}-1"
    assert (
        TraceContext(TRACE, SPAN, sampled=False, parent_span_id=PARENT).b3() == f"{TRACE}-{SPAN}-0-{PARENT}"
    )
    assert TraceContext(TRACE, SPAN, debug=True).b3() == f"{TRACE}-{SPAN}-d"
    assert TraceContext(TRACE, SPAN, sampled=False).traceparent().endswith("-00")


def test_generated_ids_are_well_formed() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", new_trace_id())
    assert re.fullmatch(r"[0-9a-f]{16}", new_span_id())
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", new_request_id()
    )
    assert parse_traceparent(TraceContext.new_root().traceparent()).sampled
