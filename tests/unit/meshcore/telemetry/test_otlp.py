"""OTLP/HTTP JSON encoding, and the exporter against a real tiny h11 collector on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from functools import partial
from typing import Any

import h11
import pytest
import trio

from meshcore.telemetry.otlp import (
    InvalidOtlpEndpoint,
    OtlpEndpoint,
    OtlpHttpExporter,
    encode_spans,
    encode_value,
)
from meshcore.telemetry.tracing import Span, SpanKind, StatusCode

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def make_span(n: int, **overrides: Any) -> Span:
    fields: dict[str, Any] = {
        "name": f"span-{n}",
        "kind": SpanKind.SERVER,
        "trace_id": TRACE,
        "span_id": f"{n + 1:016x}",
        "start_unix_nano": 1_700_000_000_000_000_000 + n,
        "end_unix_nano": 1_700_000_000_005_000_000 + n,
    }
    fields.update(overrides)
    return Span(**fields)


class Collector:
    """An OTLP/HTTP receiver reduced to what the test needs: record each POST, answer ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.received = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        for _ in range(10_000):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                self.requests.append((request.method.decode(), request.target.decode(), headers, body))
                payload = b"{}"
                await stream.send_all(
                    conn.send(h11.Response(status_code=self.status, headers=[("content-length", "2")])) or b""
                )
                await stream.send_all(
                    (conn.send(h11.Data(data=payload)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
                )
                self.received.set()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
            else:
                break
        await stream.aclose()


async def start_collector(nursery: trio.Nursery, status: int = 200) -> tuple[Collector, int]:
    collector = Collector(status)
    listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), collector.handle, 0)
    return collector, listeners[0].socket.getsockname()[1]


def test_encoding_follows_the_otlp_json_mapping() -> None:
    span = make_span(
        0,
        parent_span_id="00f067aa0ba902b7",
        attributes={
            "http.method": "GET",
            "http.status_code": 503,
            "retry": True,
            "ratio": 0.5,
            "tags": ["a", "b"],
        },
        status_code=StatusCode.ERROR,
        status_message="upstream reset",
    )
    doc = encode_spans(
        [span], service_name="waypoint.prod", resource_attributes={"k8s.namespace.name": "prod"}
    )
    assert doc == {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "waypoint.prod"}},
                        {"key": "k8s.namespace.name", "value": {"stringValue": "prod"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "meshcore"},
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": "0000000000000001",
                                "parentSpanId": "00f067aa0ba902b7",
                                "name": "span-0",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000005000000",
                                "attributes": [
                                    {"key": "http.method", "value": {"stringValue": "GET"}},
                                    {"key": "http.status_code", "value": {"intValue": "503"}},
                                    {"key": "retry", "value": {"boolValue": True}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {
                                        "key": "tags",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"stringValue": "b"}]
                                            }
                                        },
                                    },
                                ],
                                "status": {"code": 2, "message": "upstream reset"},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_bool_is_not_encoded_as_int() -> None:
    assert encode_value(False) == {"boolValue": False}
    assert encode_value(0) == {"intValue": "0"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:4318", OtlpEndpoint("127.0.0.1", 4318, "/v1/traces")),
        ("127.0.0.1:9999", OtlpEndpoint("127.0.0.1", 9999, "/v1/traces")),
        ("http://collector/custom/path", OtlpEndpoint("collector", 4318, "/custom/path")),
    ],
)
def test_endpoint_parsing(text: str, expected: OtlpEndpoint) -> None:
    assert OtlpEndpoint.parse(text) == expected


@pytest.mark.parametrize("text", ["https://collector:4318", "http://:4318", "http://host:notaport"])
def test_bad_endpoints_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidOtlpEndpoint, match="hint: give an OTLP/HTTP endpoint"):
        OtlpEndpoint.parse(text)


async def test_exporter_posts_batches_the_collector_can_read() -> None:
    async with trio.open_nursery() as nursery:
        collector, port = await start_collector(nursery)
        exporter = OtlpHttpExporter(f"http://127.0.0.1:{port}", service_name="waypoint", flush_interval=0.05)
        with trio.fail_after(10):
            async with trio.open_nursery() as exporting:
                await exporting.start(exporter.run)
                for n in range(3):
                    assert exporter.submit(make_span(n))
                await collector.received.wait()
                exporter.close()  # run() exports what is still queued, then returns
        nursery.cancel_scope.cancel()

    stats = exporter.statistics()
    assert (stats.submitted, stats.exported, stats.failed, stats.dropped) == (3, 3, 0, 0)
    received_spans = []
    for method, target, headers, body in collector.requests:
        assert (method, target, headers["content-type"]) == ("POST", "/v1/traces", "application/json")
        doc = json.loads(body)
        resource = doc["resourceSpans"][0]
        assert resource["resource"]["attributes"][0] == {
            "key": "service.name",
            "value": {"stringValue": "waypoint"},
        }
        received_spans += resource["scopeSpans"][0]["spans"]
    assert [s["spanId"] for s in received_spans] == [
        "0000000000000001",
        "0000000000000002",
        "0000000000000003",
    ]
    assert {s["traceId"] for s in received_spans} == {TRACE}
    assert received_spans[0]["startTimeUnixNano"] == "1700000000000000000"
    assert received_spans[0]["kind"] == 2


async def test_collector_errors_are_counted_and_export_continues() -> None:
    async with trio.open_nursery() as nursery:
        collector, port = await start_collector(nursery, status=503)
        exporter = OtlpHttpExporter(f"127.0.0.1:{port}", service_name="ztunnel", flush_interval=0.01)
        exporter.submit(make_span(0))
        exporter.submit(make_span(1))
        exporter.close()
        with trio.fail_after(10):
            await exporter.run()
        nursery.cancel_scope.cancel()
    stats = exporter.statistics()
    assert stats.failed == 2 and stats.exported == 0 and stats.failed_batches >= 1
    assert len(collector.requests) == stats.failed_batches


async def test_unreachable_collector_is_counted_not_raised() -> None:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = OtlpHttpExporter(f"127.0.0.1:{port}", service_name="ztunnel", flush_interval=0.01, timeout=5)
    exporter.submit(make_span(0))
    exporter.close()
    with trio.fail_after(10):
        await exporter.run()  # returns once the closed queue is drained
    stats = exporter.statistics()
    assert (stats.failed, stats.failed_batches, stats.exported) == (1, 1, 0)


def test_full_queue_drops_instead_of_blocking() -> None:
    exporter = OtlpHttpExporter("127.0.0.1:4318", service_name="x", max_queue=2)
    assert [exporter.submit(make_span(n)) for n in range(4)] == [True, True, False, False]
    stats = exporter.statistics()
    assert (stats.submitted, stats.dropped, stats.queued) == (2, 2, 2)
    exporter.close()
    assert exporter.submit(make_span(9)) is False
