"""Outbound: failures mapped to replies and flags (a table), and destinations resolved mesh-first."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshcore.errors import MeshError
from meshcore.hbone.errors import ConnectFailed, ConnectTimeout, HandshakeFailed, rejected
from meshcore.hbone.pool import HbonePool
from meshcore.telemetry.metrics import Registry
from schemas.discovery import NetworkAddress, Service, ServicePort, Workload
from ztunnel.drain import Drain
from ztunnel.explicit_proxy_protocol import Outcome
from ztunnel.lb import NoHealthyEndpoints
from ztunnel.outbound import NameNotResolved, Outbound, classify_failure
from ztunnel.state import DestinationKind, ProxyState
from ztunnel.telemetry import ConnectionTelemetry


@pytest.mark.parametrize(
    ("error", "outcome", "flags", "result"),
    [
        (rejected(401, peer="p", authority="a", meaning="m"), Outcome.DENIED, "DENY", "401"),
        (rejected(503, peer="p", authority="a", meaning="m"), Outcome.REFUSED, "CONNECT", "503"),
        (rejected(400, peer="p", authority="a", meaning="m"), Outcome.REFUSED, "CONNECT", "400"),
        (ConnectFailed("x", peer="p"), Outcome.UNREACHABLE, "CONNECT", "connect_failed"),
        (ConnectTimeout("x", peer="p", timeout=10), Outcome.UNREACHABLE, "CONNECT", "connect_failed"),
        (HandshakeFailed("x", peer="p", reason="r"), Outcome.UNREACHABLE, "CONNECT", "connect_failed"),
        (NameNotResolved("x", host="h"), Outcome.UNREACHABLE, "NR", "no_route"),
        (NoHealthyEndpoints("x", service="s"), Outcome.UNREACHABLE, NoHealthyEndpoints.response_flag, "no_route"),
        (MeshError("x"), Outcome.UNREACHABLE, "NR", "no_route"),
        (trio.TooSlowError(), Outcome.UNREACHABLE, "CONNECT", "connect_timeout"),
        (ConnectionRefusedError(111, "refused"), Outcome.REFUSED, "CONNECT", "connect_refused"),
        (OSError(113, "no route"), Outcome.FAILED, "CONNECT", "connect_failed"),
    ],
)
def test_classify_failure(error: BaseException, outcome: Outcome, flags: str, result: str) -> None:
    failure = classify_failure(error)
    assert (failure.outcome, failure.response_flags, failure.result) == (outcome, flags, result)


SOURCE = Workload(uid="c", name="client", namespace="front", addresses=("10.0.1.1",), node="n")
BACKEND = Workload(uid="b", name="backend", namespace="back", addresses=("10.0.2.1",),
                   services={"back/api.back.svc.cluster.local": {80: 8080}})
API = Service(name="api", namespace="back", hostname="api.back.svc.cluster.local",
              vips=(NetworkAddress(address="10.96.0.10"),), ports=(ServicePort(service_port=80, target_port=8080),))


def outbound(resolved: dict[str, str]) -> tuple[Outbound, list[str]]:
    state = ProxyState()
    state.replace_all(workloads=[SOURCE, BACKEND], services=[API], policies=[])
    asked: list[str] = []

    async def resolver(host: str, port: int) -> str:
        asked.append(host)
        if host not in resolved:
            raise NameNotResolved(f"cannot resolve {host}", host=host)
        return resolved[host]

    def no_tls(key: object) -> object:
        raise AssertionError("no tunnel is opened in these tests")

    pool = HbonePool(no_tls)  # type: ignore[arg-type]
    return Outbound(state=state, pool=pool, telemetry=ConnectionTelemetry(Registry()), drain=Drain(),
                    resolver=resolver), asked


@pytest.mark.parametrize(
    ("host", "port", "kind", "address", "authority", "asked"),
    [
        ("api.back.svc.cluster.local", 80, DestinationKind.DIRECT, "10.0.2.1", "10.0.2.1:8080", []),
        ("10.96.0.10", 80, DestinationKind.DIRECT, "10.0.2.1", "10.0.2.1:8080", []),
        ("10.0.2.1", 9000, DestinationKind.DIRECT, "10.0.2.1", "10.0.2.1:9000", []),
        ("backend.example", 9000, DestinationKind.DIRECT, "10.0.2.1", "10.0.2.1:9000", ["backend.example"]),
        ("elsewhere.example", 443, DestinationKind.PASSTHROUGH, "192.0.2.7", None, ["elsewhere.example"]),
        ("192.0.2.8", 22, DestinationKind.PASSTHROUGH, "192.0.2.8", None, []),
    ],
)
async def test_destination_is_mesh_first_then_os(
    host: str, port: int, kind: DestinationKind, address: str, authority: str | None, asked: list[str]
) -> None:
    out, seen = outbound({"backend.example": "10.0.2.1", "elsewhere.example": "192.0.2.7"})
    dest = await out.destination(SOURCE, host, port)
    assert (dest.kind, dest.address, dest.authority) == (kind, address, authority)
    assert seen == asked


async def test_short_service_name_needs_the_source_namespace() -> None:
    out, seen = outbound({})
    with pytest.raises(NameNotResolved):
        await out.destination(SOURCE, "api", 80)  # client is in "front": "api" is not its namespace's
    assert seen == ["api"]
    dest = await out.destination(SOURCE, "api.back", 80)
    assert dest.authority == "10.0.2.1:8080" and dest.service == API


async def test_failed_resolution_is_answered_and_counted() -> None:
    out, _ = outbound({})
    replies: list[Outcome] = []

    async def reply(outcome: Outcome) -> None:
        replies.append(outcome)

    left, _right = trio.testing.memory_stream_pair()
    await out.serve(SOURCE, left, "10.0.1.1:5000", "nowhere.example", 80, reply=reply)
    assert replies == [Outcome.UNREACHABLE]
