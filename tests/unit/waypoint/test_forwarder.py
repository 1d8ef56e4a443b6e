"""The forwarder's decisions with a scripted upstream (no sockets): retries, bodies that cannot be
replayed, timeouts, connect failures, mirroring, local replies and the attempt count — under a mock clock."""

from __future__ import annotations

import random

import attrs
import pytest
import trio
import trio.testing

from meshcore.telemetry.metrics import Registry
from meshcore.telemetry.tracing import Tracer
from waypoint.circuit_breaker import CircuitBreaker
from waypoint.clusters import Clusters
from waypoint.forwarder import Downstream, Forwarder
from waypoint.messages import Body, Request, Response
from waypoint.model import (
    ClusterKey,
    Endpoint,
    Mirror,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    StringMatch,
    UpstreamFailure,
    WeightedDestinations,
)
from waypoint.telemetry import RequestTelemetry
from waypoint.upstream import AttemptFailed
from waypoint.view import ClusterConfig, ServiceBinding, WaypointView

HOST = "web.prod.svc.cluster.local"
WEB = ClusterKey(hostname=HOST, port=80)
SHADOW = ClusterKey(hostname=HOST, port=80, subset="shadow")
EMPTY = ClusterKey(hostname=HOST, port=80, subset="empty")
ENDPOINT = Endpoint(address="10.0.0.1", port=8080, identity="spiffe://cluster.local/ns/prod/sa/web")
SHADOW_ENDPOINT = Endpoint(address="10.0.0.9", port=8080, identity="spiffe://cluster.local/ns/prod/sa/web")

@attrs.define
class ScriptedUpstream:
    """Answers attempt N with ``script[N]``: an HTTP status, an UpstreamFailure, or "hang"."""

    script: list[int | UpstreamFailure | str]
    sent: list[tuple[str, Request]] = attrs.field(factory=list)
    bodies: list[bytes] = attrs.field(factory=list)
    attempt_headers: list[bytes | None] = attrs.field(factory=list)  # as sent (the request is reused)

    async def send(
        self, endpoint: Endpoint, request: Request, *, traceparent: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Response:
        self.sent.append((endpoint.address, request))
        self.attempt_headers.append(request.header(b"x-envoy-attempt-count"))
        self.bodies.append(await request.body.read_all(1 << 20))
        step = self.script.pop(0) if self.script else 200
        if step == "hang":
            await trio.sleep_forever()
        if isinstance(step, UpstreamFailure):
            raise AttemptFailed(step, f"scripted {step.value}")
        assert isinstance(step, int)
        return Response(status=step, headers=[(b"content-length", b"2")], body=Body.from_bytes(b"ok"))


def route(name: str, path: str, action: WeightedDestinations, **options: object) -> Route:
    return Route(name=name, action=action, matches=(RouteMatch(uri=StringMatch.prefix(path)),), **options)


VIEW = WaypointView(
    services=(ServiceBinding(hostname=HOST, port=80, name="web", namespace="prod", vips=("240.0.0.1",)),),
    route_tables=(RouteTable(hostname=HOST, port=80, routes=(
        route("retry", "/retry", WeightedDestinations.single(WEB), retry=RetryPolicy.from_istio(3, "5xx")),
        route("connect", "/connect", WeightedDestinations.single(WEB),
              retry=RetryPolicy.from_istio(2, "connect-failure")),
        route("slow", "/slow", WeightedDestinations.single(WEB), timeout=0.5),
        route("mirror", "/mirror", WeightedDestinations.single(WEB), mirrors=(Mirror(cluster=SHADOW),)),
        route("empty", "/empty", WeightedDestinations.single(EMPTY)),
        route("plain", "/plain", WeightedDestinations.single(WEB)),
    )),),
    clusters=(ClusterConfig(key=WEB, endpoints=(ENDPOINT,)), ClusterConfig(key=SHADOW, endpoints=(SHADOW_ENDPOINT,)),
              ClusterConfig(key=EMPTY)),
)


def forwarder(upstream: ScriptedUpstream, mirrors: trio.Nursery | None = None) -> Forwarder:
    clusters = Clusters()
    clusters.update(VIEW.clusters)
    return Forwarder(view=lambda: VIEW, clusters=clusters, upstream=upstream,
                     telemetry=RequestTelemetry(Registry(), Tracer("test")), mirrors=mirrors,
                     rng=random.Random(7))


def request(path: str, body: Body | None = None, method: bytes = b"GET") -> Request:
    return Request(method=method, path=path.encode(), authority=HOST.encode() + b":80", body=body or Body())


DOWNSTREAM = Downstream(service=VIEW.services[0], source_identity="spiffe://cluster.local/ns/prod/sa/client",
                        source_ip="10.0.0.5")


async def test_a_5xx_is_retried_and_the_attempt_header_counts_up(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream([503, 503, 200])
    response = await forwarder(upstream).handle(request("/retry"), DOWNSTREAM)
    assert response.status == 200
    assert upstream.attempt_headers == [b"1", b"2", b"3"]


def streamed(chunks: list[bytes]) -> Body:
    """A request body arriving in chunks with no replay buffer: once read, it is gone."""
    pending = list(chunks)

    async def source() -> bytes:
        await trio.lowlevel.checkpoint()
        return pending.pop(0) if pending else b""

    return Body(source, buffer_limit=0)


async def test_a_body_already_streamed_upstream_is_never_replayed(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream([503, 200])
    body = streamed([b"part one, ", b"part two"])
    response = await forwarder(upstream).handle(request("/retry", body, b"POST"), DOWNSTREAM)
    assert response.status == 503  # the retry policy would retry, but the bytes are gone
    assert upstream.bodies == [b"part one, part two"]


async def test_a_small_body_is_replayed_on_retry(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream([503, 200])
    body = streamed([b"small"])
    body._buffer_limit = 1024  # what the HTTP shells give a request body: a bounded replay buffer
    response = await forwarder(upstream).handle(request("/retry", body, b"POST"), DOWNSTREAM)
    assert response.status == 200
    assert upstream.bodies == [b"small", b"small"]


async def test_a_route_timeout_answers_504(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream(["hang"])
    started = trio.current_time()
    response = await forwarder(upstream).handle(request("/slow"), DOWNSTREAM)
    assert response.status == 504 and await response.body.read_all(1024) == b"upstream request timeout"
    assert trio.current_time() - started == pytest.approx(0.5)


async def test_connect_failures_are_retried_then_answered_503(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream([UpstreamFailure.CONNECT_FAILURE] * 3)
    response = await forwarder(upstream).handle(request("/connect"), DOWNSTREAM)
    assert response.status == 503
    assert len(upstream.sent) == 3  # the first attempt and two retries
    assert (await response.body.read_all(1024)).endswith(b"reset reason: connection failure")


async def test_a_mirror_gets_a_copy_and_its_failure_never_reaches_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = ScriptedUpstream([200, UpstreamFailure.RESET])
    async with trio.open_nursery() as mirrors:
        response = await forwarder(upstream, mirrors).handle(request("/mirror"), DOWNSTREAM)
    assert response.status == 200
    assert [address for address, _ in upstream.sent] == ["10.0.0.1", "10.0.0.9"]
    copy = upstream.sent[1][1]
    assert copy.authority.startswith(HOST.encode())


async def test_local_replies_no_route_and_no_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    upstream = ScriptedUpstream([])
    no_route = await forwarder(upstream).handle(request("/nowhere"), DOWNSTREAM)
    no_endpoint = await forwarder(upstream).handle(request("/empty"), DOWNSTREAM)
    assert no_route.status == 404 and no_endpoint.status == 503
    assert await no_endpoint.body.read_all(1024) == b"no healthy upstream"
    assert upstream.sent == []
