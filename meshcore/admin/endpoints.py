"""The standard admin handlers every component mounts, with Istio/Envoy's paths and methods.

- ``GET /metrics`` — the registry in Prometheus text format (port 15020).
- ``GET /healthz/ready`` — 200 ``ready`` or 503 with the reason (port 15021).
- ``GET /logging`` shows the level; ``POST /logging?level=debug`` changes it (admin port 15000).
- ``GET /config_dump`` — whatever the component's dump callable returns, as JSON.
- ``POST /quitquitquit`` — start a drain; answers at once, the component finishes in the background.
- ``GET /debug/traces`` — the in-memory ring of recent traces (``?trace_id=`` for one trace).

Handlers are built from plain callables so each component decides what "ready" and "config" mean.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from meshcore.admin.http import AdminServer, Handler
from meshcore.admin.messages import BadRequest, Request, Response
from meshcore.telemetry import logs
from meshcore.telemetry.metrics import CONTENT_TYPE, Registry
from meshcore.telemetry.tracing import TraceRing

#: ``() -> None`` when ready, or a string saying what is still missing.
ReadinessCheck = Callable[[], str | None]


#: Produces the whole ``/metrics`` text when a process exposes more than its own registry (a
#: multi-worker ztunnel merges its workers' metrics into its own).
MetricsSource = Callable[[], Awaitable[str]]


def metrics_handler(registry: Registry, source: MetricsSource | None = None) -> Handler:
    async def handle(_request: Request) -> Response:
        text = registry.expose() if source is None else await source()
        return Response.text(text, content_type=CONTENT_TYPE)

    return handle


def readiness_handler(check: ReadinessCheck) -> Handler:
    async def handle(_request: Request) -> Response:
        missing = check()
        if missing is None:
            return Response.text("ready\n")
        return Response.text(f"not ready: {missing}\n", 503)

    return handle


def logging_handler() -> Handler:
    """``GET`` shows the level; ``POST ?level=NAME`` sets it (Envoy/ztunnel use POST for changes)."""

    async def handle(request: Request) -> Response:
        if request.method == "POST":
            level = request.query_one("level")
            if not level:
                raise BadRequest("missing ?level=", "POST /logging?level=debug (or info, warning, ...)")
            logs.set_level(level)
        return Response.json({"level": logs.get_level()})

    return handle


def config_dump_handler(dump: Callable[[], Any]) -> Handler:
    async def handle(_request: Request) -> Response:
        return Response.json(dump())

    return handle


def quit_handler(on_quit: Callable[[], None]) -> Handler:
    async def handle(_request: Request) -> Response:
        on_quit()
        return Response.text("OK\n")

    return handle


def traces_handler(ring: TraceRing) -> Handler:
    async def handle(request: Request) -> Response:
        trace_id = request.query_one("trace_id")
        if trace_id:
            spans = ring.get(trace_id)
            if not spans:
                return Response.json({"error": f"trace {trace_id} is not in the last {ring.max_traces}"}, 404)
            return Response.json({"trace_id": trace_id, "spans": [span.to_dict() for span in spans]})
        return Response.json({"traces": ring.to_list()})

    return handle


def mount_standard(
    server: AdminServer,
    *,
    registry: Registry | None = None,
    metrics_source: MetricsSource | None = None,
    ready: ReadinessCheck | None = None,
    config_dump: Callable[[], Any] | None = None,
    on_quit: Callable[[], None] | None = None,
    traces: TraceRing | None = None,
    log_control: bool = False,
) -> AdminServer:
    """Mount the handlers for whichever of the pieces are given; returns ``server`` for chaining."""
    if registry is not None:
        server.add_route("GET", "/metrics", metrics_handler(registry, metrics_source))
        server.add_route("GET", "/stats/prometheus", metrics_handler(registry, metrics_source))
    if ready is not None:
        server.add_route("GET", "/healthz/ready", readiness_handler(ready))
    if config_dump is not None:
        server.add_route("GET", "/config_dump", config_dump_handler(config_dump))
    if on_quit is not None:
        server.add_route("POST", "/quitquitquit", quit_handler(on_quit))
    if traces is not None:
        server.add_route("GET", "/debug/traces", traces_handler(traces))
    if log_control:
        server.add_route("GET", "/logging", logging_handler())
        server.add_route("POST", "/logging", logging_handler())
    return server
