"""Istio's standard metrics: names, HELP texts, label sets and typed label builders.

Istio dashboards, alerts and Kiali query these exact names and labels, so a mesh that wants to be a
drop-in must report them verbatim (``reporter="source"|"destination"`` from ztunnel for TCP,
``reporter="waypoint"`` from a waypoint for HTTP), with ``unknown`` wherever a value is not known —
never an empty string, which Prometheus treats as "label absent" and which breaks ``by (...)`` joins.

Two exceptions follow Istio: ``response_flags`` is ``-`` when there is no flag (Envoy's notation), and
``grpc_response_status`` is empty for requests that are not gRPC (Istio reports it only for gRPC).

Direction of the TCP byte counters follows Istio's definitions: *received* bytes travel from the
client towards the server ("during request"), *sent* bytes from the server back to the client
("during response"), whichever proxy reports them.
"""

from __future__ import annotations

from typing import Literal

import attrs

from meshcore.telemetry.metrics import (
    ENVOY_DEFAULT_BUCKETS,
    CounterChild,
    HistogramChild,
    Registry,
)

UNKNOWN = "unknown"
NO_FLAGS = "-"

Reporter = Literal["source", "destination", "waypoint"]
SecurityPolicy = Literal["mutual_tls", "none", "unknown"]

#: Labels shared by the TCP and HTTP families, in the order ztunnel/Envoy emit them.
PEER_LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS: tuple[str, ...] = PEER_LABELS
HTTP_LABELS: tuple[str, ...] = (*PEER_LABELS, "response_code", "grpc_response_status")


def _known(value: str | None) -> str:
    return value if value else UNKNOWN


@attrs.frozen
class PeerInfo:
    """What telemetry needs to know about one side of a connection: a workload and its identity.

    ``principal`` is the full SPIFFE ID (``spiffe://cluster.local/ns/prod/sa/client``), as Istio reports
    it. ``app``/``version`` default to the canonical service/revision, as ztunnel does.
    """

    workload: str | None = None
    namespace: str | None = None
    principal: str | None = None
    canonical_service: str | None = None
    canonical_revision: str | None = None
    app: str | None = None
    version: str | None = None
    cluster: str | None = None

    def label_values(self) -> tuple[str, ...]:
        """Workload, canonical service/revision, namespace, principal, app, version, cluster."""
        return (
            _known(self.workload),
            _known(self.canonical_service),
            _known(self.canonical_revision),
            _known(self.namespace),
            _known(self.principal),
            _known(self.app or self.canonical_service),
            _known(self.version or self.canonical_revision),
            _known(self.cluster),
        )


@attrs.frozen
class ServiceInfo:
    """The destination service: ``hostname`` is the FQDN (``search-api.prod.svc.cluster.local``)."""

    hostname: str | None = None
    name: str | None = None
    namespace: str | None = None


_NO_PEER = PeerInfo()
_NO_SERVICE = ServiceInfo()


def _peer_values(
    reporter: Reporter,
    source: PeerInfo | None,
    destination: PeerInfo | None,
    service: ServiceInfo | None,
    request_protocol: str,
    response_flags: str,
    security_policy: str,
) -> tuple[str, ...]:
    src = (source or _NO_PEER).label_values()
    dst = (destination or _NO_PEER).label_values()
    svc = service or _NO_SERVICE
    return (
        reporter,
        *src,
        _known(svc.hostname),
        _known(svc.namespace),
        _known(svc.name),
        dst[0],  # workload
        dst[1],  # canonical service
        dst[2],  # canonical revision
        dst[3],  # namespace
        dst[4],  # principal
        dst[5],  # app
        dst[6],  # version
        dst[7],  # cluster
        _known(request_protocol),
        response_flags or NO_FLAGS,
        _known(security_policy),
    )


@attrs.frozen
class ConnectionLabels:
    """The label values of one TCP connection, built once when the connection is classified."""

    reporter: Reporter
    source: PeerInfo | None = None
    destination: PeerInfo | None = None
    service: ServiceInfo | None = None
    response_flags: str = NO_FLAGS
    connection_security_policy: SecurityPolicy = "unknown"
    request_protocol: str = "tcp"

    def values(self) -> tuple[str, ...]:
        """Values in :data:`TCP_LABELS` order."""
        return _peer_values(
            self.reporter,
            self.source,
            self.destination,
            self.service,
            self.request_protocol,
            self.response_flags,
            self.connection_security_policy,
        )

    def as_dict(self) -> dict[str, str]:
        return dict(zip(TCP_LABELS, self.values(), strict=True))


@attrs.frozen
class RequestLabels:
    """The label values of one HTTP request as a waypoint reports it."""

    response_code: int
    reporter: Reporter = "waypoint"
    source: PeerInfo | None = None
    destination: PeerInfo | None = None
    service: ServiceInfo | None = None
    request_protocol: Literal["http", "grpc"] = "http"
    grpc_response_status: int | None = None
    response_flags: str = NO_FLAGS
    connection_security_policy: SecurityPolicy = "mutual_tls"

    def values(self) -> tuple[str, ...]:
        """Values in :data:`HTTP_LABELS` order."""
        grpc = "" if self.grpc_response_status is None else str(self.grpc_response_status)
        return (
            *_peer_values(
                self.reporter,
                self.source,
                self.destination,
                self.service,
                self.request_protocol,
                self.response_flags,
                self.connection_security_policy,
            ),
            str(self.response_code),
            grpc,
        )

    def as_dict(self) -> dict[str, str]:
        return dict(zip(HTTP_LABELS, self.values(), strict=True))


class ConnectionRecorder:
    """The four TCP series of one connection, resolved once; the copy loops call ``sent``/``received``."""

    __slots__ = ("_closed", "_opened", "_received", "_sent")

    def __init__(
        self, opened: CounterChild, closed: CounterChild, sent: CounterChild, received: CounterChild
    ):
        self._opened = opened
        self._closed = closed
        self._sent = sent
        self._received = received

    def opened(self) -> None:
        self._opened.value += 1

    def closed(self) -> None:
        self._closed.value += 1

    def sent(self, nbytes: int) -> None:
        """Bytes towards the client (server → client)."""
        self._sent.value += nbytes

    def received(self, nbytes: int) -> None:
        """Bytes towards the server (client → server)."""
        self._received.value += nbytes


class IstioTcpMetrics:
    """``istio_tcp_*`` families as ztunnel reports them."""

    def __init__(self, registry: Registry) -> None:
        self.opened = registry.counter(
            "istio_tcp_connections_opened_total", "The total number of TCP connections opened", TCP_LABELS
        )
        self.closed = registry.counter(
            "istio_tcp_connections_closed_total", "The total number of TCP connections closed", TCP_LABELS
        )
        self.received_bytes = registry.counter(
            "istio_tcp_received_bytes_total",
            "The size of total bytes received during request in case of a TCP connection",
            TCP_LABELS,
        )
        self.sent_bytes = registry.counter(
            "istio_tcp_sent_bytes_total",
            "The size of total bytes sent during response in case of a TCP connection",
            TCP_LABELS,
        )

    def for_connection(self, labels: ConnectionLabels) -> ConnectionRecorder:
        """Resolve the connection's series once. Flags known only at the end need a second recorder."""
        values = labels.values()
        return ConnectionRecorder(
            self.opened.labels(*values),
            self.closed.labels(*values),
            self.sent_bytes.labels(*values),
            self.received_bytes.labels(*values),
        )


class IstioHttpMetrics:
    """``istio_requests_total`` and the three request histograms, as a waypoint reports them."""

    def __init__(self, registry: Registry) -> None:
        self.requests = registry.counter("istio_requests_total", "The total number of requests", HTTP_LABELS)
        self.duration = registry.histogram(
            "istio_request_duration_milliseconds",
            "The duration of requests in milliseconds",
            HTTP_LABELS,
            ENVOY_DEFAULT_BUCKETS,
        )
        self.request_bytes = registry.histogram(
            "istio_request_bytes", "The size of HTTP requests in bytes", HTTP_LABELS, ENVOY_DEFAULT_BUCKETS
        )
        self.response_bytes = registry.histogram(
            "istio_response_bytes", "The size of HTTP responses in bytes", HTTP_LABELS, ENVOY_DEFAULT_BUCKETS
        )

    def record(
        self, labels: RequestLabels, *, duration_ms: float, request_bytes: int, response_bytes: int
    ) -> None:
        """Record one finished request (the label set is only complete once the response is known)."""
        values = labels.values()
        self.requests.labels(*values).value += 1
        duration: HistogramChild = self.duration.labels(*values)
        duration.observe(duration_ms)
        self.request_bytes.labels(*values).observe(request_bytes)
        self.response_bytes.labels(*values).observe(response_bytes)
