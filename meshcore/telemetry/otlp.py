"""OTLP/HTTP JSON span export: the encoding (pure) and a batching exporter (trio + h11).

Encoding follows OTLP's JSON mapping of ``ExportTraceServiceRequest``: ``resourceSpans`` →
``scopeSpans`` → ``spans``; trace and span ids are lowercase hex (not base64, unlike generic proto3
JSON); 64-bit integers (timestamps, ``intValue``) are decimal strings; enums (``kind``,
``status.code``) are integers; attributes are ``{"key": k, "value": {"stringValue": ...}}``.

The exporter never blocks the data path: :meth:`OtlpHttpExporter.submit` puts a span on a bounded
queue or drops it (counted), and a background task POSTs batches to ``<endpoint>/v1/traces``. A failed
POST is counted and its batch dropped; tracing is best effort and must not hold memory hostage to a
collector that is down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.errors import MeshError
from meshcore.telemetry.logs import get_logger
from meshcore.telemetry.tracing import AttributeValue, Span

_log = get_logger("telemetry.otlp")

SCOPE_NAME = "meshcore"
TRACES_PATH = "/v1/traces"


class InvalidOtlpEndpoint(MeshError):
    """The configured OTLP endpoint cannot be used."""

    hint = (
        "give an OTLP/HTTP endpoint like http://127.0.0.1:4318 (plain HTTP; the path defaults to /v1/traces)"
    )


def encode_value(value: AttributeValue) -> dict[str, Any]:
    """One ``AnyValue``. ``bool`` is checked before ``int`` (``True`` is an ``int`` in Python)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [encode_value(item) for item in value]}}


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> list[dict[str, Any]]:
    return [{"key": key, "value": encode_value(value)} for key, value in attributes.items()]


def encode_span(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": int(span.kind),
        "startTimeUnixNano": str(span.start_unix_nano),
        "endTimeUnixNano": str(
            span.end_unix_nano if span.end_unix_nano is not None else span.start_unix_nano
        ),
        "attributes": encode_attributes(span.attributes),
        "status": {"code": int(span.status_code)},
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    if span.status_message:
        out["status"]["message"] = span.status_message
    return out


def encode_spans(
    spans: Iterable[Span],
    *,
    service_name: str,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    scope_version: str = "",
) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` holding ``spans`` under one resource and one scope."""
    resource = {"service.name": service_name, **(resource_attributes or {})}
    scope: dict[str, Any] = {"name": SCOPE_NAME}
    if scope_version:
        scope["version"] = scope_version
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": encode_attributes(resource)},
                "scopeSpans": [{"scope": scope, "spans": [encode_span(span) for span in spans]}],
            }
        ]
    }


@attrs.frozen
class OtlpEndpoint:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, endpoint: str) -> OtlpEndpoint:
        """``http://host:port[/path]`` or ``host:port``; the path defaults to ``/v1/traces``."""
        text = endpoint if "://" in endpoint else f"http://{endpoint}"
        parts = urlsplit(text)
        if parts.scheme != "http":
            raise InvalidOtlpEndpoint(f"unsupported OTLP endpoint scheme {parts.scheme!r} in {endpoint!r}")
        try:
            port = parts.port or 4318
        except ValueError as exc:
            raise InvalidOtlpEndpoint(f"invalid port in OTLP endpoint {endpoint!r}") from exc
        if not parts.hostname:
            raise InvalidOtlpEndpoint(f"no host in OTLP endpoint {endpoint!r}")
        path = parts.path if parts.path not in ("", "/") else TRACES_PATH
        return cls(parts.hostname, port, path)


@attrs.define
class ExporterStatistics:
    """Counters an operator reads from the admin API; ``dropped`` = queue full, ``failed`` = POST failed."""

    submitted: int = 0
    exported: int = 0
    dropped: int = 0
    failed: int = 0
    failed_batches: int = 0
    queued: int = 0


class OtlpHttpExporter:
    """Batches finished spans and POSTs them as OTLP/HTTP JSON. Run :meth:`run` in a nursery."""

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str,
        resource_attributes: Mapping[str, AttributeValue] | None = None,
        max_queue: int = 2048,
        max_batch: int = 256,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = OtlpEndpoint.parse(endpoint)
        self.service_name = service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.timeout = timeout
        self._send, self._receive = trio.open_memory_channel[Span](max_queue)
        self._stats = ExporterStatistics()

    def submit(self, span: Span) -> bool:
        """Queue ``span`` without waiting; ``False`` (and counted) if the queue is full or closed."""
        try:
            self._send.send_nowait(span)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._stats.dropped += 1
            return False
        self._stats.submitted += 1
        return True

    def statistics(self) -> ExporterStatistics:
        stats = attrs.evolve(self._stats)
        stats.queued = self._receive.statistics().current_buffer_used
        return stats

    def close(self) -> None:
        """Stop accepting spans; :meth:`run` exports what is queued and returns."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            while True:
                batch = await self._next_batch()
                if not batch:
                    return
                await self._export(batch)

    async def _next_batch(self) -> list[Span]:
        """Wait for one span, then collect more for up to ``flush_interval`` or until the batch is full."""
        try:
            batch = [await self._receive.receive()]
        except trio.EndOfChannel:
            return []
        with trio.move_on_after(self.flush_interval):
            while len(batch) < self.max_batch:
                try:
                    batch.append(await self._receive.receive())
                except trio.EndOfChannel:
                    break
        return batch

    async def _export(self, batch: Sequence[Span]) -> None:
        payload = encode_spans(
            batch, service_name=self.service_name, resource_attributes=self.resource_attributes
        )
        ep = self.endpoint
        try:
            response = await http_request(
                ep.host,
                ep.port,
                "POST",
                ep.path,
                body=json.dumps(payload, separators=(",", ":")),
                headers={"content-type": "application/json"},
                timeout=self.timeout,
            )
        except AdminRequestFailed as exc:
            self._record_failure(batch, str(exc))
            return
        if 200 <= response.status < 300:
            self._stats.exported += len(batch)
        else:
            self._record_failure(batch, f"collector answered {response.status}: {response.text()[:200]}")

    def _record_failure(self, batch: Sequence[Span], error: str) -> None:
        self._stats.failed += len(batch)
        self._stats.failed_batches += 1
        endpoint = f"{self.endpoint.host}:{self.endpoint.port}"
        _log.warning("span export failed", endpoint=endpoint, spans=len(batch), error=error)
