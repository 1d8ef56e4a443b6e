"""Per-request telemetry of the waypoint: golden-signal metrics, the access log line and the spans.

A :class:`RequestRecord` is filled in while the forwarder works (route, cluster, endpoint, attempts,
flags) and finished once the response body has gone downstream, so durations and byte counts are the
real ones. Metric labels follow Istio's (reporter ``waypoint``); the destination workload/version come
from the chosen endpoint's labels (``app``, ``version``, ``workload``), the source from the peer's
SPIFFE identity.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from meshcore.telemetry.istio import IstioHttpMetrics, PeerInfo, RequestLabels, ServiceInfo
from meshcore.telemetry.logs import RequestLog, log_request
from meshcore.telemetry.metrics import Registry
from meshcore.telemetry.tracing import Span, SpanKind, StatusCode, Tracer
from waypoint.messages import Body, Response
from waypoint.model import Endpoint


def peer_from_identity(identity: str | None) -> PeerInfo:
    """Source peer facts a SPIFFE ID gives (``spiffe://td/ns/<ns>/sa/<sa>``)."""
    if not identity:
        return PeerInfo()
    parts = identity.removeprefix("spiffe://").split("/")
    namespace = parts[2] if len(parts) == 5 and parts[1] == "ns" else None
    return PeerInfo(principal=identity, namespace=namespace)


def peer_from_endpoint(endpoint: Endpoint) -> PeerInfo:
    labels = dict(endpoint.labels)
    base = peer_from_identity(endpoint.identity)
    return PeerInfo(
        workload=labels.get("workload"),
        namespace=base.namespace,
        principal=base.principal,
        canonical_service=labels.get("service.istio.io/canonical-name") or labels.get("app"),
        canonical_revision=labels.get("service.istio.io/canonical-revision") or labels.get("version"),
        app=labels.get("app"),
        version=labels.get("version"),
    )


@attrs.define
class RequestRecord:
    """What one request did; mutable while it is being served."""

    method: str
    path: str
    authority: str
    protocol: str
    started: float
    request_id: str
    span: Span
    service: ServiceInfo
    source_identity: str | None = None
    route: str | None = None
    cluster: str | None = None
    endpoint: Endpoint | None = None
    attempts: int = 0
    flags: list[str] = attrs.field(factory=list)
    error: str | None = None

    @property
    def response_flags(self) -> str:
        return ",".join(dict.fromkeys(self.flags)) or "-"


class RequestTelemetry:
    """Owns the metric families and the tracer; :meth:`finish_when_sent` closes a record."""

    def __init__(self, registry: Registry, tracer: Tracer, clock: Callable[[], float] = trio.current_time) -> None:
        self.metrics = IstioHttpMetrics(registry)
        self.tracer = tracer
        self._clock = clock

    def finish_when_sent(self, record: RequestRecord, response: Response, request_body: Body) -> Response:
        """Record now if the body is already in memory, else once the last chunk has been read."""
        body = response.body
        if body.complete:
            self._finish(record, response, request_body, body.bytes_read)
            return response
        sent = 0
        finished = False

        chunks = body.chunks()
        wrapped: Body

        async def relay() -> bytes:
            nonlocal sent, finished
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                wrapped.trailers = body.trailers
                if not finished:
                    finished = True
                    self._finish(record, response, request_body, sent)
                return b""
            except BaseException as exc:
                if not finished:
                    finished = True
                    record.error = f"response body: {type(exc).__name__}"
                    record.flags.append("UPE")
                    self._finish(record, response, request_body, sent)
                raise
            sent += len(chunk)
            return chunk

        wrapped = Body(relay)
        response.body = wrapped
        return response

    def _finish(self, record: RequestRecord, response: Response, request_body: Body, response_bytes: int) -> None:
        duration = self._clock() - record.started
        grpc_status = _grpc_status(response)
        is_grpc = any(k == b"content-type" and v.startswith(b"application/grpc") for k, v in response.headers)
        labels = RequestLabels(
            response_code=response.status,
            source=peer_from_identity(record.source_identity),
            destination=peer_from_endpoint(record.endpoint) if record.endpoint is not None else None,
            service=record.service,
            request_protocol="grpc" if is_grpc else "http",
            grpc_response_status=grpc_status,
            response_flags=record.response_flags,
        )
        self.metrics.record(
            labels, duration_ms=duration * 1000.0, request_bytes=request_body.bytes_read,
            response_bytes=response_bytes,
        )
        span = record.span
        span.set_attribute("http.response.status_code", response.status)
        span.set_attribute("response_flags", record.response_flags)
        self.tracer.finish(span, status=StatusCode.ERROR if response.status >= 500 else StatusCode.OK)
        log_request(
            RequestLog(
                method=record.method,
                path=record.path,
                authority=record.authority,
                status=response.status,
                duration_s=duration,
                protocol=record.protocol,
                bytes_received=request_body.bytes_read,
                bytes_sent=response_bytes,
                response_flags=record.response_flags,
                upstream=record.endpoint.key if record.endpoint is not None else None,
                upstream_cluster=record.cluster,
                attempts=record.attempts,
                trace_id=span.trace_id,
                request_id=record.request_id,
                src_identity=record.source_identity,
                route=record.route,
                error=record.error,
            )
        )

    def attempt_span(self, record: RequestRecord, endpoint: Endpoint, attempt: int) -> Span:
        return self.tracer.start_span(
            f"{record.cluster} attempt {attempt}",
            SpanKind.CLIENT,
            parent=record.span.context(),
            attributes={"upstream.address": endpoint.key, "upstream.cluster": record.cluster or "",
                        "attempt": attempt},
        )


def _grpc_status(response: Response) -> int | None:
    for name, value in (*response.headers, *response.body.trailers):
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return None
    return None
