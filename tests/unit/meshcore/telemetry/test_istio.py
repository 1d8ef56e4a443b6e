"""Istio's metric names and label sets, with ``unknown`` for what is not known."""

from __future__ import annotations

from meshcore.telemetry.istio import (
    HTTP_LABELS,
    TCP_LABELS,
    ConnectionLabels,
    IstioHttpMetrics,
    IstioTcpMetrics,
    PeerInfo,
    RequestLabels,
    ServiceInfo,
)
from meshcore.telemetry.metrics import Registry

CLIENT = PeerInfo(
    workload="client",
    namespace="prod",
    principal="spiffe://cluster.local/ns/prod/sa/client",
    canonical_service="client",
    canonical_revision="v1",
)
SERVER = PeerInfo(
    workload="search-v2",
    namespace="prod",
    principal="spiffe://cluster.local/ns/prod/sa/search",
    canonical_service="search",
    canonical_revision="v2",
    app="search-app",
    version="2.0",
    cluster="Kubernetes",
)
SERVICE = ServiceInfo(hostname="search-api.prod.svc.cluster.local", name="search-api", namespace="prod")


def test_missing_values_are_unknown_never_empty() -> None:
    labels = ConnectionLabels(reporter="source").as_dict()
    assert labels["reporter"] == "source"
    assert labels["response_flags"] == "-"
    assert labels["request_protocol"] == "tcp"
    unknown = {name for name, value in labels.items() if value == "unknown"}
    assert unknown == set(TCP_LABELS) - {"reporter", "response_flags", "request_protocol"}


def test_connection_labels_fill_source_destination_and_service() -> None:
    labels = ConnectionLabels(
        reporter="destination",
        source=CLIENT,
        destination=SERVER,
        service=SERVICE,
        connection_security_policy="mutual_tls",
    ).as_dict()
    assert labels["source_workload"] == "client"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/prod/sa/client"
    # app/version fall back to the canonical service/revision, as in ztunnel
    assert (labels["source_app"], labels["source_version"]) == ("client", "v1")
    assert labels["source_cluster"] == "unknown"
    assert labels["destination_workload"] == "search-v2"
    assert labels["destination_workload_namespace"] == "prod"
    assert (labels["destination_app"], labels["destination_version"]) == ("search-app", "2.0")
    assert labels["destination_canonical_revision"] == "v2"
    assert labels["destination_cluster"] == "Kubernetes"
    assert labels["destination_service"] == "search-api.prod.svc.cluster.local"
    assert labels["destination_service_name"] == "search-api"
    assert labels["destination_service_namespace"] == "prod"
    assert labels["connection_security_policy"] == "mutual_tls"


def test_tcp_metrics_use_istio_names_and_one_resolution_per_connection() -> None:
    registry = Registry()
    tcp = IstioTcpMetrics(registry)
    recorder = tcp.for_connection(
        ConnectionLabels(reporter="source", source=CLIENT, destination=SERVER, service=SERVICE)
    )
    recorder.opened()
    recorder.received(100)
    recorder.sent(2048)
    recorder.received(1)
    recorder.closed()

    values = ConnectionLabels(reporter="source", source=CLIENT, destination=SERVER, service=SERVICE).values()
    assert tcp.opened.labels(*values).value == 1
    assert tcp.closed.labels(*values).value == 1
    assert tcp.received_bytes.labels(*values).value == 101
    assert tcp.sent_bytes.labels(*values).value == 2048
    text = registry.expose()
    for name in (
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ):
        assert f"# TYPE {name} counter" in text
    assert 'reporter="source",source_workload="client",' in text


def test_denied_connection_carries_its_flag() -> None:
    labels = ConnectionLabels(reporter="destination", source=CLIENT, response_flags="DENY").as_dict()
    assert labels["response_flags"] == "DENY"


def test_request_labels_add_code_and_grpc_status() -> None:
    http_labels = RequestLabels(
        response_code=503, source=CLIENT, service=SERVICE, response_flags="UH"
    ).as_dict()
    assert list(http_labels) == list(HTTP_LABELS)
    assert http_labels["reporter"] == "waypoint"
    assert http_labels["response_code"] == "503"
    assert http_labels["response_flags"] == "UH"
    assert http_labels["request_protocol"] == "http"
    assert http_labels["grpc_response_status"] == ""  # Istio reports it only for gRPC
    assert http_labels["connection_security_policy"] == "mutual_tls"
    grpc = RequestLabels(response_code=200, request_protocol="grpc", grpc_response_status=14).as_dict()
    assert (grpc["request_protocol"], grpc["grpc_response_status"]) == ("grpc", "14")


def test_http_metrics_record_counter_and_three_histograms() -> None:
    registry = Registry()
    http = IstioHttpMetrics(registry)
    labels = RequestLabels(response_code=200, source=CLIENT, destination=SERVER, service=SERVICE)
    http.record(labels, duration_ms=3.2, request_bytes=0, response_bytes=1500)
    http.record(labels, duration_ms=40, request_bytes=10, response_bytes=700)

    values = labels.values()
    assert http.requests.labels(*values).value == 2
    duration = http.duration.labels(*values)
    assert (duration.count, duration.sum) == (2, 43.2)
    assert dict(duration.cumulative())[5.0] == 1
    assert dict(http.response_bytes.labels(*values).cumulative())[1000.0] == 1
    assert http.request_bytes.labels(*values).sum == 10
    text = registry.expose()
    assert "# TYPE istio_requests_total counter" in text
    assert "# TYPE istio_request_duration_milliseconds histogram" in text
    assert "# TYPE istio_request_bytes histogram" in text
    assert "# TYPE istio_response_bytes histogram" in text
    assert 'response_code="200",grpc_response_status="",le="0.5"} 0' in text
