"""Telemetry shared by every component: Istio metrics, structured/access logs, and distributed tracing.

- :mod:`.metrics` — registry, Counter/Gauge/Histogram, Prometheus text exposition.
- :mod:`.istio` — Istio's standard metric families and typed label builders.
- :mod:`.logs` — structlog JSON to stderr, run-time log level, access-log records.
- :mod:`.tracecontext` — W3C traceparent and B3 parsing/propagation (sans-IO).
- :mod:`.tracing` — spans, tracer, ring of recent traces.
- :mod:`.otlp` — OTLP/HTTP JSON encoding and a non-blocking batching exporter.
"""
