"""Connection labels and access-log lines as ztunnel reports them (Istio's names, `unknown` defaults)."""

from __future__ import annotations

import io
import json

import pytest
import structlog
import trio
import trio.testing

from meshcore.hbone.copy import CopyStats
from meshcore.telemetry.logs import configure_logging
from meshcore.telemetry.metrics import Registry
from schemas.discovery import Service, TunnelProtocol, Workload
from ztunnel.telemetry import ConnectionFacts, ConnectionTelemetry, connection_labels, copy_reporting, peer_info

CLIENT = Workload(uid="c", name="client-0", namespace="front", service_account="client", workload_name="client",
                  canonical_name="client", canonical_revision="v1")
SERVER = Workload(uid="s", name="server-0", namespace="back", service_account="server")
PLAIN = Workload(uid="p", name="legacy", namespace="back", tunnel_protocol=TunnelProtocol.NONE)
SVC = Service(name="server", namespace="back", hostname="server.back.svc.cluster.local")


@pytest.mark.parametrize(
    ("facts", "flags", "expected"),
    [
        (
            ConnectionFacts(direction="inbound", src_addr="a", dst_addr="b", source=CLIENT,
                            source_identity=CLIENT.identity, destination=SERVER, destination_identity=SERVER.identity,
                            mutual_tls=True),
            "-",
            {"reporter": "destination", "source_workload": "client", "source_principal": CLIENT.identity,
             "source_canonical_revision": "v1", "destination_workload": "server-0",
             "destination_service": "unknown", "connection_security_policy": "mutual_tls", "response_flags": "-"},
        ),
        (
            ConnectionFacts(direction="outbound", src_addr="a", dst_addr="b", source=CLIENT,
                            source_identity=CLIENT.identity, destination=SERVER, service=SVC, mutual_tls=True),
            "DENY",
            {"reporter": "source", "destination_service": "server.back.svc.cluster.local",
             "destination_service_name": "server", "destination_principal": SERVER.identity,
             "response_flags": "DENY"},
        ),
        (
            ConnectionFacts(direction="outbound", src_addr="a", dst_addr="b", source=CLIENT, destination=PLAIN),
            "CONNECT",
            {"destination_principal": "unknown", "connection_security_policy": "unknown",
             "response_flags": "CONNECT"},
        ),
        (
            ConnectionFacts(direction="inbound", src_addr="a", dst_addr="b", source_identity="spiffe://x/ns/y/sa/z"),
            "",
            {"source_workload": "unknown", "source_principal": "spiffe://x/ns/y/sa/z", "response_flags": "-"},
        ),
    ],
)
def test_labels(facts: ConnectionFacts, flags: str, expected: dict[str, str]) -> None:
    labels = connection_labels(facts, flags).as_dict()
    assert {key: labels[key] for key in expected} == expected


def test_peer_info_without_workload_keeps_the_proven_identity() -> None:
    assert peer_info(None, "spiffe://td/ns/a/sa/b").principal == "spiffe://td/ns/a/sa/b"
    assert peer_info(None, None).principal is None


def values(registry: Registry) -> dict[str, str]:
    return {line.split("{")[0]: line.rsplit(" ", 1)[1] for line in registry.expose().splitlines()
            if line.startswith("istio_tcp")}


def expected(*, opened: int, closed: int, received: int, sent: int) -> dict[str, str]:
    return {"istio_tcp_connections_opened_total": str(opened), "istio_tcp_connections_closed_total": str(closed),
            "istio_tcp_received_bytes_total": str(received), "istio_tcp_sent_bytes_total": str(sent)}


async def test_tracked_connection_counts_once_and_logs_one_line() -> None:
    out = io.StringIO()
    configure_logging("info", component="ztunnel", stream=out)
    try:
        registry = Registry()
        telemetry = ConnectionTelemetry(registry)
        facts = ConnectionFacts(direction="inbound", src_addr="10.0.0.1:4000", dst_addr="10.0.0.2:80",
                                source=CLIENT, source_identity=CLIENT.identity, destination=SERVER,
                                destination_identity=SERVER.identity, hbone_addr="10.0.0.2:15008", mutual_tls=True)
        tracked = telemetry.track(facts)
        assert values(registry) == expected(opened=1, closed=0, received=0, sent=0)
        first = tracked.finish(bytes_sent=7, bytes_received=5)
        again = tracked.finish(bytes_sent=100, bytes_received=100)
        assert again is first
        assert values(registry) == expected(opened=1, closed=1, received=5, sent=7)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(lines) == 1
        assert lines[0]["event"] == "connection complete"
        assert lines[0]["src.identity"] == CLIENT.identity and lines[0]["dst.workload"] == "back/server-0"
        assert (lines[0]["bytes_recv"], lines[0]["bytes_sent"], lines[0]["dst.hbone_addr"]) == (5, 7, "10.0.0.2:15008")
    finally:
        structlog.reset_defaults()


async def test_byte_counters_follow_a_running_copy(autojump_clock: trio.abc.Clock) -> None:
    registry = Registry()
    tracked = ConnectionTelemetry(registry).track(
        ConnectionFacts(direction="outbound", src_addr="a", dst_addr="b", source=CLIENT))
    client, proxy_down = trio.testing.memory_stream_pair()
    proxy_up, server = trio.testing.memory_stream_pair()
    stats = CopyStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy_reporting, tracked, proxy_down, proxy_up, stats, 5.0)
        await client.send_all(b"x" * 10)
        assert await server.receive_some(100) == b"x" * 10
        await server.send_all(b"yy")
        assert await client.receive_some(100) == b"yy"
        assert values(registry)["istio_tcp_received_bytes_total"] == "0"  # not reported yet
        await trio.sleep(6)
        assert values(registry) == expected(opened=1, closed=0, received=10, sent=2)  # while still open
        await client.send_eof()
        await server.send_eof()
    tracked.finish(bytes_sent=stats.upstream_to_downstream, bytes_received=stats.downstream_to_upstream)
    assert values(registry) == expected(opened=1, closed=1, received=10, sent=2)  # no double counting
