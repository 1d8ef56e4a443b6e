"""Captured traffic (netns mode) on loopback: the original destination is injected where netns mode
reads SO_ORIGINAL_DST, so the proxying decisions are shown without namespaces or nat rules."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from meshcore.hbone.pool import HbonePool
from meshcore.telemetry.metrics import Registry
from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, StringMatch, Workload
from ztunnel.captured import CapturedOutbound, PlaintextInbound
from ztunnel.drain import Drain
from ztunnel.inbound_decision import decide_inbound_plaintext
from ztunnel.outbound import Outbound
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionTelemetry

POD = Workload(uid="pod", name="pod", namespace="prod", addresses=("127.0.0.1",), node="n")
ELSEWHERE = Workload(uid="far", name="far", namespace="prod", addresses=("127.0.0.2",), node="other")
# PeerAuthentication STRICT as istiod pushes it: deny whatever carries no principal.
STRICT = Authorization(name="strict", namespace="prod", scope=Scope.NAMESPACE, action=Action.DENY,
                       rules=(Rule(clauses=(Clause(matches=(Match(not_principals=(StringMatch(presence=True),)),)),)),))
ALLOW_LOCAL = Authorization(name="from-lo", namespace="prod", scope=Scope.NAMESPACE, action=Action.ALLOW,
                            rules=(Rule(clauses=(Clause(matches=(Match(source_ips=("127.0.0.0/8",)),)),)),))
ALLOW_PRINCIPAL = Authorization(
    name="only-client", namespace="prod", scope=Scope.NAMESPACE, action=Action.ALLOW,
    rules=(Rule(clauses=(Clause(matches=(Match(principals=(StringMatch(exact="cluster.local/ns/a/sa/b"),)),)),)),))


@pytest.mark.parametrize(
    ("target", "port", "policies", "status"),
    [
        (POD, 8080, [], 200),
        (POD, 8080, [STRICT], 401),  # STRICT refuses plaintext
        (POD, 8080, [ALLOW_LOCAL], 200),  # PERMISSIVE + an IP rule: admitted with no identity
        (POD, 8080, [ALLOW_PRINCIPAL], 401),  # a principal cannot be proven in plaintext
        (POD, 15008, [], 400),
        (POD, 15001, [], 400),
        (ELSEWHERE, 8080, [], 400),
        (None, 8080, [], 400),
    ],
)
def test_plaintext_decisions(target: Workload | None, port: int, policies: list[Authorization], status: int) -> None:
    verdict = decide_inbound_plaintext(source_ip="127.0.0.9", destination_ip="127.0.0.1", destination_port=port,
                                       target=target, node="n", policies=policies)
    assert verdict.status == status


@attrs.define
class Captured:
    state: ProxyState
    registry: Registry
    inbound: tuple[str, int]
    outbound: tuple[str, int]
    app_port: int


@pytest.fixture
async def captured(nursery: trio.Nursery) -> AsyncIterator[Captured]:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()

    app_port = (await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")))[0]
    app = app_port.socket.getsockname()
    outside = (await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.3")))[0]
    outside_port = outside.socket.getsockname()[1]
    state = ProxyState()
    state.replace_all(workloads=[POD], services=[], policies=[])
    registry = Registry()
    telemetry = ConnectionTelemetry(registry)
    drain = Drain()

    def to_app(_stream: trio.SocketStream) -> tuple[str, int]:
        return ("127.0.0.1", app[1])

    inbound = PlaintextInbound(POD, listeners=await trio.open_tcp_listeners(0, host="127.0.0.1"), state=state,
                               node="n", telemetry=telemetry, drain=drain, original_destination=to_app)
    pool = HbonePool(lambda key: (_ for _ in ()).throw(AssertionError("no tunnels here")))
    source = attrs.evolve(POD, uid="src", addresses=("127.0.0.9",))
    outbound = CapturedOutbound(
        source, listeners=await trio.open_tcp_listeners(0, host="127.0.0.1"),
        outbound=Outbound(state=state, pool=pool, telemetry=telemetry, drain=drain), drain=drain,
        original_destination=lambda _s: ("127.0.0.3", outside_port))  # not a mesh address: passthrough
    in_addr = await nursery.start(inbound.run)
    out_addr = await nursery.start(outbound.run)
    yield Captured(state, registry, in_addr, out_addr, app[1])


async def echo_via(address: tuple[str, int], payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(payload)
        await stream.send_eof()
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        return data


async def test_plaintext_inbound_reaches_the_app(captured: Captured) -> None:
    assert await echo_via(captured.inbound, b"plain") == b"plain"
    assert 'connection_security_policy="unknown"' in captured.registry.expose()


async def test_strict_peer_authentication_resets_plaintext(captured: Captured) -> None:
    captured.state.replace_all(workloads=[POD], services=[], policies=[STRICT])
    with pytest.raises(trio.BrokenResourceError):
        await echo_via(captured.inbound, b"plain")
    flagged = [line for line in captured.registry.expose().splitlines()
               if line.startswith("istio_tcp_connections_closed_total{") and 'response_flags="DENY"' in line]
    assert len(flagged) == 1


async def test_captured_outbound_is_carried_to_its_original_destination(captured: Captured) -> None:
    assert await echo_via(captured.outbound, b"out") == b"out"
    assert 'reporter="source"' in captured.registry.expose()
