"""The standard handlers, mounted on a real server and called the way meshctl and Prometheus do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
import trio

from meshcore.admin.client import http_request
from meshcore.admin.endpoints import mount_standard
from meshcore.admin.http import AdminServer
from meshcore.telemetry import logs
from meshcore.telemetry.metrics import CONTENT_TYPE, Registry
from meshcore.telemetry.tracing import SpanKind, Tracer


class Component:
    """Stands in for a ztunnel: readiness that flips, a config, a drain request."""

    def __init__(self) -> None:
        self.missing: str | None = "waiting for the first config push"
        self.quit_requested = False
        self.registry = Registry()
        self.registry.counter("istio_tcp_connections_opened_total", "opened", ("reporter",)).labels(
            "source"
        ).inc()
        self.tracer = Tracer("ztunnel")

    def ready(self) -> str | None:
        return self.missing

    def config_dump(self) -> dict[str, Any]:
        return {"workloads": [{"name": "client", "namespace": "prod"}]}

    def quit(self) -> None:
        self.quit_requested = True


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    yield
    logs.set_level("info")
    structlog.reset_defaults()


@pytest.fixture
async def component() -> AsyncIterator[tuple[Component, int]]:
    comp = Component()
    server = mount_standard(
        AdminServer(),
        registry=comp.registry,
        ready=comp.ready,
        config_dump=comp.config_dump,
        on_quit=comp.quit,
        traces=comp.tracer.ring,
        log_control=True,
    )
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(server.run)
        yield comp, port
        nursery.cancel_scope.cancel()


async def test_metrics_are_served_in_prometheus_text(component: tuple[Component, int]) -> None:
    _, port = component
    response = await http_request("127.0.0.1", port, "GET", "/metrics")
    assert response.status == 200
    assert response.header("content-type") == CONTENT_TYPE
    assert 'istio_tcp_connections_opened_total{reporter="source"} 1\n' in response.text()


async def test_readiness_is_503_with_the_reason_until_ready(component: tuple[Component, int]) -> None:
    comp, port = component
    waiting = await http_request("127.0.0.1", port, "GET", "/healthz/ready")
    assert (waiting.status, waiting.text()) == (503, "not ready: waiting for the first config push\n")
    comp.missing = None
    ready = await http_request("127.0.0.1", port, "GET", "/healthz/ready")
    assert (ready.status, ready.text()) == (200, "ready\n")


async def test_logging_level_is_shown_and_changed(component: tuple[Component, int]) -> None:
    _, port = component
    assert (await http_request("127.0.0.1", port, "GET", "/logging")).json() == {"level": "info"}
    changed = await http_request("127.0.0.1", port, "POST", "/logging?level=debug")
    assert changed.json() == {"level": "debug"}
    assert logs.get_level() == "debug"
    bad = await http_request("127.0.0.1", port, "POST", "/logging?level=chatty")
    assert bad.status == 400 and "use one of" in bad.text()
    missing = await http_request("127.0.0.1", port, "POST", "/logging")
    assert missing.status == 400 and "level=debug" in missing.text()


async def test_config_dump_and_quit(component: tuple[Component, int]) -> None:
    comp, port = component
    dump = await http_request("127.0.0.1", port, "GET", "/config_dump")
    assert dump.json() == {"workloads": [{"name": "client", "namespace": "prod"}]}
    assert (await http_request("127.0.0.1", port, "GET", "/quitquitquit")).status == 405
    assert not comp.quit_requested
    assert (await http_request("127.0.0.1", port, "POST", "/quitquitquit")).status == 200
    assert comp.quit_requested


async def test_recent_traces(component: tuple[Component, int]) -> None:
    comp, port = component
    span = comp.tracer.start_span("inbound", SpanKind.SERVER)
    comp.tracer.finish(span)
    listing = (await http_request("127.0.0.1", port, "GET", "/debug/traces")).json()
    assert [t["trace_id"] for t in listing["traces"]] == [span.trace_id]
    one = await http_request("127.0.0.1", port, "GET", f"/debug/traces?trace_id={span.trace_id}")
    assert one.json()["spans"][0]["span_id"] == span.span_id
    gone = await http_request("127.0.0.1", port, "GET", "/debug/traces?trace_id=" + "f" * 32)
    assert gone.status == 404
