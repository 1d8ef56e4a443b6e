"""Trace context propagation: W3C ``traceparent``/``tracestate`` and Zipkin B3 (single and multi header).

Sans-IO: header values in, a :class:`TraceContext` out, and back. The strict parsers raise
:class:`MalformedTraceHeader` naming what was wrong; :func:`extract` is the lenient entry point a
proxy uses — per the W3C spec an invalid ``traceparent`` is ignored and a new trace starts, it never
fails the request.

Precedence in :func:`extract` follows Envoy: ``traceparent`` first, then ``b3``, then ``x-b3-*``.
A 64-bit B3 trace id is left-padded with zeros to 128 bits so it fits a W3C header.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterable, Mapping

import attrs

from meshcore.errors import MeshError

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

#: Every header this module reads or writes; a proxy strips these before injecting its own.
TRACE_HEADERS: frozenset[str] = frozenset(
    {
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    }
)


class MalformedTraceHeader(MeshError):
    """A trace propagation header could not be parsed."""

    hint = (
        "{header} must look like {expected}; lowercase hex, non-zero ids. "
        "The proxy ignores it and starts a new trace"
    )


#: Identifiers only need to be unique, not secret (W3C Trace Context §3.2.2.3 asks for randomness, not
#: unpredictability), so they come from a Mersenne Twister seeded from the OS once: ``secrets`` and
#: ``uuid4`` read ``os.urandom`` — a system call — for every id, three per proxied request.
_ids = random.Random()


def new_trace_id() -> str:
    """A random, non-zero 128-bit trace id as 32 lowercase hex digits."""
    return f"{_ids.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random, non-zero 64-bit span id as 16 lowercase hex digits."""
    return f"{_ids.getrandbits(64) or 1:016x}"


def new_request_id() -> str:
    """An ``x-request-id`` value: a random (version 4) UUID, as Envoy generates."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


@attrs.frozen
class TraceContext:
    """Where a request sits in a trace: the trace, the sender's span, and the sampling decision."""

    trace_id: str
    span_id: str
    sampled: bool = True
    debug: bool = False
    parent_span_id: str | None = None  # only B3 carries the sender's parent
    tracestate: str | None = None

    @classmethod
    def new_root(cls, *, sampled: bool = True) -> TraceContext:
        return cls(trace_id=new_trace_id(), span_id=new_span_id(), sampled=sampled)

    def child(self, span_id: str | None = None) -> TraceContext:
        """The context to send downstream of a new span that is a child of this one."""
        return attrs.evolve(self, span_id=span_id or new_span_id(), parent_span_id=self.span_id)

    @property
    def flags(self) -> int:
        return 0x01 if self.sampled else 0x00

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def b3(self) -> str:
        """The single ``b3`` header value."""
        state = "d" if self.debug else ("1" if self.sampled else "0")
        value = f"{self.trace_id}-{self.span_id}-{state}"
        return f"{value}-{self.parent_span_id}" if self.parent_span_id else value

    def b3_multi(self) -> list[tuple[str, str]]:
        headers = [("x-b3-traceid", self.trace_id), ("x-b3-spanid", self.span_id)]
        if self.parent_span_id:
            headers.append(("x-b3-parentspanid", self.parent_span_id))
        if self.debug:
            headers.append(("x-b3-flags", "1"))
        else:
            headers.append(("x-b3-sampled", "1" if self.sampled else "0"))
        return headers


def parse_traceparent(value: str, tracestate: str | None = None) -> TraceContext:
    """Parse a W3C ``traceparent``; future versions are read by their first four fields, as the spec says."""

    def bad(why: str) -> MalformedTraceHeader:
        return MalformedTraceHeader(
            f"invalid traceparent {value!r}: {why}",
            header="traceparent",
            expected="00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>",
        )

    text = value.strip()
    parts = text.split("-")
    if len(parts) < 4:
        raise bad("expected 4 dash-separated fields")
    version, trace_id, span_id, flags = parts[:4]
    if not _HEX2.match(version) or version == "ff":
        raise bad("version must be two lowercase hex digits other than ff")
    if version == "00" and len(parts) != 4:
        raise bad("version 00 has exactly 4 fields")
    if not _HEX32.match(trace_id) or trace_id == _ZERO_TRACE:
        raise bad("trace id must be 32 lowercase hex digits, not all zero")
    if not _HEX16.match(span_id) or span_id == _ZERO_SPAN:
        raise bad("parent id must be 16 lowercase hex digits, not all zero")
    if not _HEX2.match(flags):
        raise bad("flags must be two lowercase hex digits")
    return TraceContext(
        trace_id=trace_id, span_id=span_id, sampled=bool(int(flags, 16) & 0x01), tracestate=tracestate or None
    )


def _b3_trace_id(raw: str, header: str, expected: str) -> str:
    trace_id = raw.lower()
    if not (_HEX16.match(trace_id) or _HEX32.match(trace_id)) or set(trace_id) == {"0"}:
        raise MalformedTraceHeader(
            f"invalid {header} trace id {raw!r}: need 16 or 32 hex digits, not all zero",
            header=header,
            expected=expected,
        )
    return trace_id.rjust(32, "0")


def _b3_span_id(raw: str, header: str, expected: str, what: str) -> str:
    span_id = raw.lower()
    if not _HEX16.match(span_id) or span_id == _ZERO_SPAN:
        raise MalformedTraceHeader(
            f"invalid {header} {what} {raw!r}: need 16 hex digits, not all zero",
            header=header,
            expected=expected,
        )
    return span_id


_B3_SINGLE = "{traceid}-{spanid}[-{1|0|d}[-{parentspanid}]] or a lone 1|0|d"


def parse_b3_single(value: str) -> TraceContext | None:
    """Parse a ``b3`` header. A lone sampling state (``b3: 0``) carries no ids and returns ``None``."""
    text = value.strip()
    parts = text.split("-")
    if len(parts) == 1:
        if text in {"0", "1", "d"}:
            return None
        raise MalformedTraceHeader(
            f"invalid b3 {value!r}: a lone value must be 0, 1 or d", header="b3", expected=_B3_SINGLE
        )
    if len(parts) > 4:
        raise MalformedTraceHeader(f"invalid b3 {value!r}: too many fields", header="b3", expected=_B3_SINGLE)
    trace_id = _b3_trace_id(parts[0], "b3", _B3_SINGLE)
    span_id = _b3_span_id(parts[1], "b3", _B3_SINGLE, "span id")
    state = parts[2] if len(parts) > 2 else "1"
    if state not in {"0", "1", "d"}:
        raise MalformedTraceHeader(f"invalid b3 sampling state {state!r}", header="b3", expected=_B3_SINGLE)
    parent = _b3_span_id(parts[3], "b3", _B3_SINGLE, "parent span id") if len(parts) == 4 else None
    return TraceContext(
        trace_id=trace_id, span_id=span_id, sampled=state != "0", debug=state == "d", parent_span_id=parent
    )


_B3_MULTI = "x-b3-traceid: <16|32 hex>, x-b3-spanid: <16 hex>, optional x-b3-sampled: 1|0, x-b3-flags: 1"


def parse_b3_multi(headers: Mapping[str, str]) -> TraceContext:
    """Parse the ``x-b3-*`` headers (keys lower-case)."""
    raw_trace, raw_span = headers.get("x-b3-traceid"), headers.get("x-b3-spanid")
    if not raw_trace or not raw_span:
        raise MalformedTraceHeader(
            "x-b3 headers need both x-b3-traceid and x-b3-spanid", header="x-b3-*", expected=_B3_MULTI
        )
    trace_id = _b3_trace_id(raw_trace.strip(), "x-b3-traceid", _B3_MULTI)
    span_id = _b3_span_id(raw_span.strip(), "x-b3-spanid", _B3_MULTI, "span id")
    raw_parent = headers.get("x-b3-parentspanid")
    parent = _b3_span_id(raw_parent.strip(), "x-b3-parentspanid", _B3_MULTI, "id") if raw_parent else None
    debug = headers.get("x-b3-flags", "").strip() == "1"
    sampled_raw = headers.get("x-b3-sampled", "1").strip().lower()
    if sampled_raw not in {"1", "0", "true", "false"}:
        raise MalformedTraceHeader(
            f"invalid x-b3-sampled {sampled_raw!r}", header="x-b3-sampled", expected="1 or 0"
        )
    sampled = debug or sampled_raw in {"1", "true"}
    return TraceContext(
        trace_id=trace_id, span_id=span_id, sampled=sampled, debug=debug, parent_span_id=parent
    )


HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]


def _collect(headers: Mapping[str, str] | HeaderPairs) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
        if name in TRACE_HEADERS and name not in found:
            found[name] = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
    return found


def extract(headers: Mapping[str, str] | HeaderPairs) -> TraceContext | None:
    """The incoming context, or ``None`` to start a new trace. Malformed headers are ignored."""
    found = _collect(headers)
    if "traceparent" in found:
        try:
            return parse_traceparent(found["traceparent"], found.get("tracestate"))
        except MalformedTraceHeader:
            pass
    if "b3" in found:
        try:
            return parse_b3_single(found["b3"])
        except MalformedTraceHeader:
            pass
    if "x-b3-traceid" in found:
        try:
            return parse_b3_multi(found)
        except MalformedTraceHeader:
            pass
    return None


def inject(context: TraceContext, *, b3: bool = False) -> list[tuple[str, str]]:
    """Headers that carry ``context`` downstream: ``traceparent`` (+``tracestate``), optionally B3 multi.

    The caller removes any existing :data:`TRACE_HEADERS` first, so a request never carries two
    disagreeing contexts.
    """
    headers = [("traceparent", context.traceparent())]
    if context.tracestate:
        headers.append(("tracestate", context.tracestate))
    if b3:
        headers.extend(context.b3_multi())
    return headers
