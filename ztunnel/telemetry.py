"""Per-connection telemetry as ztunnel reports it: Istio TCP metrics plus one access-log line.

Inbound connections are reported with ``reporter="destination"``, outbound ones with
``reporter="source"``, each with the workload/identity of both ends as far as this ztunnel knows them
(``unknown`` otherwise) and ``connection_security_policy="mutual_tls"`` whenever the connection rode an
HBONE tunnel. The label set is fixed once the connection is classified — after authorization and the
upstream connect — so a denied or failed connection is counted opened *and* closed under its
``response_flags`` (``DENY``, ``CONNECT``, …), as ztunnel does. Byte counters follow Istio's direction:
*received* is client → server, *sent* is server → client.

:func:`connection_labels` is pure (tested as a table); :class:`ConnectionTelemetry` adds the registry,
the logger and the clock. Byte counters advance while a connection runs (:func:`copy_reporting`,
every 5 s) and are completed when it closes.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import trio

from meshcore.hbone.copy import CopyStats, copy_bidirectional
from meshcore.telemetry.istio import (
    NO_FLAGS,
    ConnectionLabels,
    IstioTcpMetrics,
    PeerInfo,
    SecurityPolicy,
    ServiceInfo,
)
from meshcore.telemetry.logs import ConnectionLog, log_connection
from meshcore.telemetry.metrics import Registry
from schemas.discovery import Service, TunnelProtocol, Workload

Direction = Literal["inbound", "outbound"]

REPORT_INTERVAL = 5.0


def peer_info(workload: Workload | None, identity: str | None) -> PeerInfo:
    """What telemetry says about one end: its workload if known, and the identity it proved (or will)."""
    if workload is None:
        return PeerInfo(principal=identity)
    return PeerInfo(
        workload=workload.workload_name or workload.name,
        namespace=workload.namespace,
        principal=identity or (workload.identity if workload.tunnel_protocol is TunnelProtocol.HBONE else None),
        canonical_service=workload.canonical_name or None,
        canonical_revision=workload.canonical_revision or None,
    )


def service_info(service: Service | None) -> ServiceInfo | None:
    if service is None:
        return None
    return ServiceInfo(hostname=service.hostname, name=service.name, namespace=service.namespace)


@attrs.frozen(kw_only=True)
class ConnectionFacts:
    """Everything known about one connection once it is classified (plain data)."""

    direction: Direction
    src_addr: str
    dst_addr: str
    source: Workload | None = None
    source_identity: str | None = None
    destination: Workload | None = None
    destination_identity: str | None = None
    service: Service | None = None
    hbone_addr: str | None = None
    mutual_tls: bool = False


def connection_labels(facts: ConnectionFacts, response_flags: str = NO_FLAGS) -> ConnectionLabels:
    """The Istio label values for ``facts``: reporter from the direction, mTLS from the tunnel."""
    policy: SecurityPolicy = "mutual_tls" if facts.mutual_tls else "unknown"
    return ConnectionLabels(
        reporter="destination" if facts.direction == "inbound" else "source",
        source=peer_info(facts.source, facts.source_identity),
        destination=peer_info(facts.destination, facts.destination_identity),
        service=service_info(facts.service),
        response_flags=response_flags or NO_FLAGS,
        connection_security_policy=policy,
    )


def access_log_record(
    facts: ConnectionFacts,
    *,
    bytes_sent: int,
    bytes_received: int,
    duration_s: float,
    result: str,
    response_flags: str,
    error: str | None,
) -> ConnectionLog:
    def name(workload: Workload | None) -> str | None:
        return None if workload is None else f"{workload.namespace}/{workload.name}"

    return ConnectionLog(
        direction=facts.direction,
        src_addr=facts.src_addr,
        dst_addr=facts.dst_addr,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        duration_s=duration_s,
        src_identity=facts.source_identity,
        dst_identity=facts.destination_identity,
        src_workload=name(facts.source),
        dst_workload=name(facts.destination),
        dst_service=None if facts.service is None else facts.service.hostname,
        dst_hbone_addr=facts.hbone_addr,
        result=result,
        response_flags=response_flags or NO_FLAGS,
        error=error,
    )


class TrackedConnection:
    """One classified connection: counted as opened now, closed (with its bytes) by :meth:`finish`."""

    def __init__(self, owner: ConnectionTelemetry, facts: ConnectionFacts, response_flags: str) -> None:
        self.facts = facts
        self.response_flags = response_flags or NO_FLAGS
        self._owner = owner
        self._started = trio.current_time()
        self._recorder = owner.metrics.for_connection(connection_labels(facts, self.response_flags))
        self._recorder.opened()
        self._reported_sent = 0
        self._reported_received = 0
        self.finished: ConnectionLog | None = None

    def report(self, *, bytes_sent: int, bytes_received: int) -> None:
        """Bring the byte counters up to these running totals (so long connections show progress)."""
        self._recorder.sent(max(0, bytes_sent - self._reported_sent))
        self._recorder.received(max(0, bytes_received - self._reported_received))
        self._reported_sent = max(self._reported_sent, bytes_sent)
        self._reported_received = max(self._reported_received, bytes_received)

    def finish(
        self, *, bytes_sent: int = 0, bytes_received: int = 0, result: str = "ok", error: str | None = None
    ) -> ConnectionLog:
        """Count the bytes and the close, and write the access-log line (once; later calls return it)."""
        if self.finished is not None:
            return self.finished
        self.report(bytes_sent=bytes_sent, bytes_received=bytes_received)
        self._recorder.closed()
        self.finished = access_log_record(
            self.facts,
            bytes_sent=bytes_sent,
            bytes_received=bytes_received,
            duration_s=trio.current_time() - self._started,
            result=result,
            response_flags=self.response_flags,
            error=error,
        )
        log_connection(self.finished, self._owner.logger)
        return self.finished


class ConnectionTelemetry:
    """The TCP metric families and the access logger of one ztunnel."""

    def __init__(self, registry: Registry, *, logger: Any = None) -> None:
        self.metrics = IstioTcpMetrics(registry)
        self.logger = logger  # None: the process's access log (meshcore.telemetry.logs)

    def track(self, facts: ConnectionFacts, response_flags: str = NO_FLAGS) -> TrackedConnection:
        return TrackedConnection(self, facts, response_flags)


async def copy_reporting(
    tracked: TrackedConnection,
    downstream: trio.abc.Stream,
    upstream: trio.abc.Stream,
    stats: CopyStats,
    interval: float = REPORT_INTERVAL,
) -> None:
    """:func:`copy_bidirectional` while the byte counters follow the copy every ``interval`` seconds."""

    async def report_every() -> None:
        while True:
            await trio.sleep(interval)
            tracked.report(bytes_sent=stats.upstream_to_downstream, bytes_received=stats.downstream_to_upstream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_every)
        await copy_bidirectional(downstream, upstream, stats)
        nursery.cancel_scope.cancel()
