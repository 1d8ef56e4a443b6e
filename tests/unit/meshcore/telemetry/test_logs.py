"""structlog JSON lines, a level that changes at run time, and the access-log records."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from meshcore.telemetry import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure_logging("info", component="ztunnel", stream=out)
    yield out
    structlog.reset_defaults()
    logs.set_level("info")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_level_time_component_and_logger(stream: io.StringIO) -> None:
    logs.get_logger("inbound").info("connection accepted", peer="10.0.0.1:5000")
    (line,) = lines(stream)
    assert line["event"] == "connection accepted"
    assert line["level"] == "info"
    assert line["component"] == "ztunnel"
    assert line["logger_name"] == "inbound"
    assert line["peer"] == "10.0.0.1:5000"
    assert line["timestamp"].endswith("Z")


def test_level_change_applies_to_existing_loggers(stream: io.StringIO) -> None:
    log = logs.get_logger("x")
    log.debug("hidden")
    assert logs.set_level("DEBUG") == "debug"
    log.debug("shown")
    logs.set_level("warn")
    log.info("hidden too")
    log.warning("kept")
    log.exception("also kept")
    assert [line["event"] for line in lines(stream)] == ["shown", "kept", "also kept"]
    assert logs.get_level() == "warning"


def test_unknown_level_is_refused_with_the_valid_names() -> None:
    with pytest.raises(logs.InvalidLogLevel, match="use one of trace, debug"):
        logs.set_level("verbose")


def test_connection_access_log_line(stream: io.StringIO) -> None:
    logs.log_connection(
        logs.ConnectionLog(
            direction="inbound",
            src_addr="10.0.0.1:40000",
            dst_addr="10.0.0.2:8080",
            bytes_sent=2048,
            bytes_received=100,
            duration_s=0.0125,
            src_identity="spiffe://cluster.local/ns/prod/sa/client",
            dst_identity="spiffe://cluster.local/ns/prod/sa/search",
            dst_workload="search-v1",
            result="denied",
            response_flags="DENY",
        )
    )
    (line,) = lines(stream)
    assert line["event"] == "connection complete"
    assert line["logger_name"] == "access"
    assert line["src.addr"] == "10.0.0.1:40000" and line["dst.addr"] == "10.0.0.2:8080"
    assert line["src.identity"] == "spiffe://cluster.local/ns/prod/sa/client"
    assert (line["bytes_sent"], line["bytes_recv"], line["duration_ms"]) == (2048, 100, 12.5)
    assert (line["direction"], line["result"], line["response_flags"]) == ("inbound", "denied", "DENY")
    assert "dst.service" not in line  # unknown fields are left out, not null


def test_request_access_log_line(stream: io.StringIO) -> None:
    logs.log_request(
        logs.RequestLog(
            method="GET",
            path="/search?q=x",
            authority="search-api.prod.svc.cluster.local:8080",
            status=200,
            duration_s=0.004,
            upstream="10.0.0.7:8080",
            attempts=2,
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            request_id="req-1",
        )
    )
    (line,) = lines(stream)
    assert line["event"] == "request complete"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/search?q=x", 200)
    assert (line["upstream"], line["attempts"], line["duration_ms"]) == ("10.0.0.7:8080", 2, 4.0)
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["response_flags"] == "-"
