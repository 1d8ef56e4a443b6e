"""The waypoint as a real process between an HBONE client and a real ztunnel in front of the apps.

client ══HBONE══► ``python -m waypoint`` ══HBONE══► ``python -m ztunnel`` (node-b) ─► apps

Everything asserted is what a user sees: statuses, bodies, app-side counters, the access log on the
waypoint's stderr, ``/metrics`` and ``/config_dump``. Random behaviour is checked against a 99.9 %
binomial interval.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from meshcore.admin.client import http_request
from tests.integration.waypoint_mesh import (
    CLIENT,
    INTRUDER,
    WAYPOINT,
    App,
    MeshClient,
    Reply,
    access_log,
    load_identity,
    series,
)
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import Pod, free_block, split, write_cert_dir, write_local_config, ztunnel_args
from tests.unit.waypoint.binomial import interval_999
from waypoint.authz import Action, L7Policy, Operation, Rule, Source
from waypoint.model import (
    ClusterKey,
    ClusterPolicy,
    ConnectionPoolSettings,
    Endpoint,
    FaultAbort,
    FaultPolicy,
    HeaderMatch,
    OutlierDetection,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    StringMatch,
    WeightedDestination,
    WeightedDestinations,
)
from waypoint.view import ClusterConfig, ServiceBinding, WaypointView, view_to_json

SEARCH = "search.prod.svc.cluster.local"
WEB = "web.prod.svc.cluster.local"


@attrs.frozen
class Mesh:
    block: int
    waypoint: Component
    ztunnel: Component
    apps: dict[str, App]
    client: MeshClient
    intruder: MeshClient
    config: Path

    @property
    def search(self) -> str:
        return f"240.240.{self.block}.1:80"

    @property
    def web(self) -> str:
        return f"240.240.{self.block}.2:80"


def pods(block: int) -> dict[str, Pod]:
    return {
        "search-v1": Pod("search-v1", "prod", "search", f"127.{block}.2.1", "node-b"),
        "search-v2": Pod("search-v2", "prod", "search", f"127.{block}.2.2", "node-b"),
        "web": Pod("web", "prod", "web", f"127.{block}.2.3", "node-b"),
        "web-bad": Pod("web-bad", "prod", "web", f"127.{block}.2.4", "node-b"),
    }


def endpoint(pod: Pod, version: str, app: str) -> Endpoint:
    return Endpoint(address=pod.ip, port=8080, identity=pod.identity.uri,
                    labels={"app": app, "version": version, "workload": pod.name})


def split_route(v1: int, v2: int) -> Route:
    return Route(name="split", action=WeightedDestinations(destinations=(
        WeightedDestination(cluster=ClusterKey(hostname=SEARCH, port=80, subset="v1"), weight=v1),
        WeightedDestination(cluster=ClusterKey(hostname=SEARCH, port=80, subset="v2"), weight=v2),
    )))


def to(hostname: str, subset: str = "") -> WeightedDestinations:
    return WeightedDestinations.single(ClusterKey(hostname=hostname, port=80, subset=subset))


def prefix(path: str) -> tuple[RouteMatch, ...]:
    return (RouteMatch(uri=StringMatch.prefix(path)),)


def build_view(block: int, *, v1: int = 95, v2: int = 5, version: str = "1") -> WaypointView:
    p = pods(block)
    search_routes = (
        Route(name="canary-header", action=to(SEARCH, "v2"), matches=(
            RouteMatch(headers=(HeaderMatch(name="x-canary", match=StringMatch.exact("always")),)),)),
        Route(name="v3", action=to(SEARCH, "v3"), matches=prefix("/v3")),
        split_route(v1, v2),
    )
    web_routes = (
        Route(name="abort", action=to(WEB), matches=prefix("/abort"),
              fault=FaultPolicy(abort=FaultAbort(percentage=10, http_status=503))),
        Route(name="flaky", action=to(WEB), matches=prefix("/flaky"), retry=RetryPolicy.from_istio(3, "5xx")),
        Route(name="limited", action=to(WEB, "limited"), matches=prefix("/slow-limited")),
        Route(name="slow", action=to(WEB), matches=prefix("/slow"), timeout=0.3),
        Route(name="eject", action=to(WEB, "pair"), matches=prefix("/eject")),
        Route(name="admin", action=to(WEB), matches=prefix("/admin")),
        Route(name="private", action=to(WEB), matches=prefix("/private")),
        Route(name="headers", action=to(WEB), matches=prefix("/headers")),
    )
    ejecting = ClusterPolicy(outlier_detection=OutlierDetection(
        consecutive_5xx=3, interval=0.2, base_ejection_time=1.0, max_ejection_percent=100))
    limited = ClusterPolicy(connection_pool=ConnectionPoolSettings(
        max_connections=1, http1_max_pending_requests=1, max_requests_per_connection=2))
    clusters = (
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v1"),
                      endpoints=(endpoint(p["search-v1"], "v1", "search"),)),
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v2"),
                      endpoints=(endpoint(p["search-v2"], "v2", "search"),)),
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v3")),
        ClusterConfig(key=ClusterKey(hostname=WEB, port=80), endpoints=(endpoint(p["web"], "v1", "web"),)),
        ClusterConfig(key=ClusterKey(hostname=WEB, port=80, subset="limited"), policy=limited,
                      endpoints=(endpoint(p["web"], "v1", "web"),)),
        ClusterConfig(key=ClusterKey(hostname=WEB, port=80, subset="pair"), policy=ejecting,
                      endpoints=(endpoint(p["web"], "v1", "web"), endpoint(p["web-bad"], "v1", "web"))),
    )
    policies = (
        L7Policy(name="no-admin", namespace="prod", action=Action.DENY, targets=frozenset({WEB}),
                 rules=(Rule(operations=(Operation(paths=("/admin/*",)),)),)),
        L7Policy(name="no-delete", namespace="prod", action=Action.DENY, targets=frozenset({WEB}),
                 rules=(Rule(operations=(Operation(methods=("DELETE",)),)),)),
        L7Policy(name="private-client-only", namespace="prod", action=Action.DENY, targets=frozenset({WEB}),
                 rules=(Rule(sources=(Source(not_principals=(CLIENT.principal,)),),
                             operations=(Operation(paths=("/private/*",)),)),)),
    )
    return WaypointView(
        services=(
            ServiceBinding(hostname=SEARCH, port=80, name="search", namespace="prod", vips=(f"240.240.{block}.1",)),
            ServiceBinding(hostname=WEB, port=80, name="web", namespace="prod", vips=(f"240.240.{block}.2",)),
        ),
        route_tables=(RouteTable(hostname=SEARCH, port=80, routes=search_routes),
                      RouteTable(hostname=WEB, port=80, routes=web_routes)),
        clusters=clusters,
        l7_policies=policies,
        version=version,
    )


def write_view(path: Path, view: WaypointView) -> None:
    """Write atomically (rename), as a config-management tool would, so a reader never sees half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(view_to_json(view)))
    temporary.replace(path)


@pytest.fixture
async def mesh(spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Mesh]:
    block = free_block()
    layout = pods(block)
    local = tmp_path / "ztunnel.yaml"
    write_local_config(local, layout.values())
    certs = tmp_path / "certs"
    identities = [p.identity for p in layout.values()] + [WAYPOINT, CLIENT, INTRUDER]
    write_cert_dir(certs, identities, tmp_path / "ca-state")
    apps = {
        "search-v1": App("search-v1", "v1"), "search-v2": App("search-v2", "v2"),
        "web": App("web", "v1"), "web-bad": App("web-bad", "v1", bad=True),
    }
    for name, app in apps.items():
        await nursery.start(app.serve, layout[name].ip, 8080)
    config = tmp_path / "view.json"
    write_view(config, build_view(block))
    ztunnel = spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", local, certs))
    waypoint_ip = f"127.{block}.3.1"
    waypoint = spawn.python_module(
        "waypoint", "waypoint", "--address", waypoint_ip, "--identity", WAYPOINT.uri, "--cert-dir", str(certs),
        "--config", str(config), "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0",
        "--reload-interval", "0.1",
    )
    client = MeshClient(load_identity(certs, CLIENT), waypoint_ip)
    intruder = MeshClient(load_identity(certs, INTRUDER), waypoint_ip)
    await nursery.start(client.pool.run)
    await nursery.start(intruder.pool.run)
    yield Mesh(block, waypoint, ztunnel, apps, client, intruder, config)


async def fan_out(client: MeshClient, authority: str, paths: list[str], *, workers: int = 16,
                  headers: dict[str, str] | None = None) -> list[Reply]:
    """Send ``paths`` over ``workers`` keep-alive tunnels; replies in completion order."""
    replies: list[Reply] = []
    queue = list(reversed(paths))

    async def worker() -> None:
        async with client.http(authority) as session:
            while queue:
                replies.append(await session.request(queue.pop(), headers=headers))

    async with trio.open_nursery() as nursery:
        for _ in range(min(workers, len(paths))):
            nursery.start_soon(worker)
    return replies


async def metrics_text(component: Component) -> str:
    host, port = split(component.addresses["metrics"])
    response = await http_request(host, port, "GET", "/metrics")
    assert response.status == 200
    return response.text()


async def logged(component: Component, count: int, **fields: object) -> list[dict[str, object]]:
    """Access-log lines matching ``fields`` once at least ``count`` are there (bounded wait)."""
    found: list[dict[str, object]] = []
    for _ in range(100):
        found = [line for line in access_log(component) if all(line.get(k) == v for k, v in fields.items())]
        if len(found) >= count:
            return found
        await trio.sleep(0.05)
    return found


# ------------------------------------------------------------------------------------------- routing


@pytest.mark.slow
async def test_95_5_split_over_4000_requests_with_golden_signals(mesh: Mesh) -> None:
    replies = await fan_out(mesh.client, mesh.search, ["/search?q=1"] * 4000)
    assert [r.status for r in replies] == [200] * 4000
    v2 = sum(1 for r in replies if r.version == "v2")
    low, high = interval_999(4000, 0.05)
    assert low <= v2 <= high, f"{v2} of 4000 went to v2"
    assert mesh.apps["search-v1"].received["/search"] + mesh.apps["search-v2"].received["/search"] == 4000
    text = await metrics_text(mesh.waypoint)
    common = {"reporter": "waypoint", "response_code": "200", "destination_service": SEARCH,
              "source_principal": CLIENT.uri, "destination_workload": "search-v2"}
    assert series(text, "istio_requests_total", destination_version="v2", **common) == v2
    assert series(text, "istio_requests_total", destination_version="v1",
                  **{**common, "destination_workload": "search-v1"}) == 4000 - v2
    assert series(text, "istio_request_duration_milliseconds_count", destination_version="v2", **common) == v2
    assert 'le="0.5"' in text and "istio_request_bytes_bucket" in text and "istio_response_bytes_sum" in text


async def test_header_routing_no_route_and_subset_without_endpoints(mesh: Mesh) -> None:
    async with mesh.client.http(mesh.search) as session:
        canary = [await session.request("/search", headers={"x-canary": "always"}) for _ in range(20)]
        assert {(r.status, r.version) for r in canary} == {(200, "v2")}
        empty = await session.request("/v3/anything")
        assert (empty.status, empty.body) == (503, b"no healthy upstream")
    async with mesh.client.http(mesh.web) as session:
        missing = await session.request("/nothing-here")
        assert missing.status == 404
    lines = await logged(mesh.waypoint, 1, status=404)
    assert lines[0]["response_flags"] == "NR"
    uh = await logged(mesh.waypoint, 1, status=503, route="v3")
    assert uh[0]["response_flags"] == "UH"


async def test_x_request_id_and_traceparent_reach_the_app(mesh: Mesh) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with mesh.client.http(mesh.web) as session:
        reply = await session.request("/headers", headers={"traceparent": parent})
    seen = json.loads(reply.body)
    assert seen["x-request-id"]
    trace_id = seen["traceparent"].split("-")[1]
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert seen["traceparent"] != parent and seen["x-envoy-attempt-count"] == "1"
    line = (await logged(mesh.waypoint, 1, path="/headers"))[0]
    assert line["trace_id"] == trace_id and line["request_id"] == seen["x-request-id"]
    host, port = split(mesh.waypoint.addresses["admin"])
    trace = (await http_request(host, port, "GET", f"/debug/traces?trace_id={trace_id}")).json()
    by_kind = {span["kind"]: span for span in trace["spans"]}
    assert sorted(by_kind) == ["CLIENT", "SERVER"]
    assert by_kind["SERVER"]["parent_span_id"] == "b7ad6b7169203331"
    assert by_kind["CLIENT"]["parent_span_id"] == by_kind["SERVER"]["span_id"]
    assert seen["traceparent"].split("-")[2] == by_kind["CLIENT"]["span_id"]


# ------------------------------------------------------------------------------------------- resilience


@pytest.mark.slow
async def test_abort_10_percent_is_statistically_10_percent(mesh: Mesh) -> None:
    replies = await fan_out(mesh.client, mesh.web, ["/abort"] * 3000)
    aborted = [r for r in replies if r.status == 503]
    assert {r.status for r in replies} <= {200, 503}
    low, high = interval_999(3000, 0.10)
    assert low <= len(aborted) <= high, f"{len(aborted)} of 3000 aborted"
    assert {r.body for r in aborted} == {b"fault filter abort"}
    assert mesh.apps["web"].received["/abort"] == 3000 - len(aborted), "an aborted request never goes upstream"
    text = await metrics_text(mesh.waypoint)
    assert series(text, "istio_requests_total", response_code="503", response_flags="FI") == len(aborted)


async def test_retries_turn_one_failure_in_three_into_full_success(mesh: Mesh) -> None:
    # One request at a time, so the arithmetic below is exact: the app fails every third *arrival*.
    # With 4 concurrent clients a 503 showed up now and then: concurrent retries can land on failing
    # turns again, and Envoy's default budget (3 concurrent retries) refuses a fourth with UO.
    replies = await fan_out(mesh.client, mesh.web, ["/flaky"] * 90, workers=1)
    assert [r.status for r in replies] == [200] * 90
    sent_upstream = mesh.apps["web"].received["/flaky"]
    assert sent_upstream - sent_upstream // 3 == 90, "every third arrival failed and was retried"
    lines = await logged(mesh.waypoint, 90, route="flaky")
    assert len(lines) == 90 and {line["status"] for line in lines} == {200}
    assert sum(int(str(line["attempts"])) for line in lines) == sent_upstream


async def test_route_timeout_answers_504_ut(mesh: Mesh) -> None:
    async with mesh.client.http(mesh.web) as session:
        started = trio.current_time()
        reply = await session.request("/slow")
        elapsed = trio.current_time() - started
    assert (reply.status, reply.body) == (504, b"upstream request timeout")
    assert elapsed < 1.5, "the 0.3 s route timeout fired long before the app's 2 s answer"
    line = (await logged(mesh.waypoint, 1, route="slow"))[0]
    assert line["response_flags"] == "UT" and line["status"] == 504


async def cluster_state(mesh: Mesh, name: str) -> dict[str, dict[str, object]]:
    host, port = split(mesh.waypoint.addresses["admin"])
    dump = (await http_request(host, port, "GET", "/config_dump")).json()
    cluster = next(c for c in dump["clusters"] if c["name"] == name)
    return {e["labels"]["workload"]: e for e in cluster["endpoints"]}


async def test_connection_pool_limits_queue_one_overflow_the_rest_and_retire_used_connections(mesh: Mesh) -> None:
    """maxConnections 1, http1MaxPendingRequests 1, maxRequestsPerConnection 2, a 2 s app: the first request
    holds the only connection, the second waits for it, the third is refused at once with 503 UO."""
    replies: dict[int, Reply] = {}

    async def one(index: int, delay: float) -> None:
        await trio.sleep(delay)
        async with mesh.client.http(mesh.web) as session:
            replies[index] = await session.request(f"/slow-limited/{index}")

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index, delay in enumerate((0.0, 0.3, 0.6)):
            nursery.start_soon(one, index, delay)
    elapsed = trio.current_time() - started
    assert [replies[i].status for i in range(3)] == [200, 200, 503]
    assert replies[2].body.endswith(b"reset reason: overflow")
    assert elapsed >= 4.0, "the second request waited for the first to free the only connection"
    line = (await logged(mesh.waypoint, 1, route="limited", status=503))[0]
    assert line["response_flags"] == "UO"
    breaker = next(c for c in (await cluster_dump(mesh)) if c["name"] == f"outbound|80|limited|{WEB}")
    stats = breaker["circuit_breaker"]
    assert stats["rq_pending_overflow"] == 1 and stats["rq_pending_active"] == 0 and stats["rq_active"] == 0
    assert stats["cx_active"] == 0  # two requests served: maxRequestsPerConnection retired the connection


async def cluster_dump(mesh: Mesh) -> list[dict[str, Any]]:
    host, port = split(mesh.waypoint.addresses["admin"])
    clusters: list[dict[str, Any]] = (await http_request(host, port, "GET", "/config_dump")).json()["clusters"]
    return clusters


async def test_outlier_detection_ejects_and_returns_after_base_ejection_time(mesh: Mesh) -> None:
    name = f"outbound|80|pair|{WEB}"
    async with mesh.client.http(mesh.web) as session:
        first = [await session.request("/eject") for _ in range(6)]
        assert sorted(r.status for r in first) == [200, 200, 200, 500, 500, 500]
        state = await cluster_state(mesh, name)
        assert state["web-bad"]["ejected"] is True and state["web"]["ejected"] is False
        assert state["web-bad"]["ejections_total"] == 1
        during = [await session.request("/eject") for _ in range(20)]
        assert {(r.status, r.headers["x-app"]) for r in during} == {(200, "web")}
        await trio.sleep(1.5)  # baseEjectionTime 1 s, swept every 0.2 s
        state = await cluster_state(mesh, name)
        assert state["web-bad"]["ejected"] is False
        after = [await session.request("/eject") for _ in range(4)]
        assert "web-bad" in {r.headers["x-app"] for r in after}, "the endpoint is back in rotation"


# ------------------------------------------------------------------------------------------- authz


async def test_l7_authorization_by_path_method_and_principal(mesh: Mesh) -> None:
    async with mesh.client.http(mesh.web) as session:
        admin = await session.request("/admin/users")
        delete = await session.request("/headers", method="DELETE")
        private = await session.request("/private/data")
    assert (admin.status, admin.body) == (403, b"RBAC: access denied")
    assert (delete.status, delete.body) == (403, b"RBAC: access denied")
    assert private.status == 200
    async with mesh.intruder.http(mesh.web) as session:
        refused = await session.request("/private/data")
        allowed = await session.request("/headers")
    assert (refused.status, refused.body) == (403, b"RBAC: access denied")
    assert allowed.status == 200
    assert mesh.apps["web"].received["/admin"] == 0 and mesh.apps["web"].received["/private"] == 1
    line = (await logged(mesh.waypoint, 1, path="/private/data", status=403))[0]
    assert line["src.identity"] == INTRUDER.uri
    assert line["error"] == "rbac_access_denied_matched_policy[prod/private-client-only]"


# ------------------------------------------------------------------------------------------- bad input


async def raw_exchange(mesh: Mesh, payload: bytes) -> bytes:
    """Send raw bytes in a fresh tunnel to the web service; everything the waypoint answers until it closes."""
    async with mesh.client.tunnel(mesh.web) as stream:
        await stream.send_all(payload)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received  # EOF: the waypoint closed the connection after answering


async def test_bad_input_is_answered_while_other_connections_keep_working(mesh: Mesh) -> None:
    broken_chunked = (b"POST /headers HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n"
                      b"zz\r\nhello\r\n0\r\n\r\n")
    huge = b"GET /headers HTTP/1.1\r\nhost: web\r\nx-big: " + b"a" * (61 * 1024) + b"\r\n\r\n"
    smuggling = (b"POST /headers HTTP/1.1\r\nhost: web\r\ncontent-length: 5\r\n"
                 b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    async with mesh.client.http(mesh.web) as survivor:
        assert (await survivor.request("/headers")).status == 200
        for payload, status in ((broken_chunked, b"400"), (huge, b"431"), (smuggling, b"400")):
            answer = await raw_exchange(mesh, payload)
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
            assert (await survivor.request("/headers")).status == 200, "the other connection keeps working"
    assert mesh.apps["web"].received["/headers"] == 4, "no bad request reached the app"
    async with mesh.client.http(mesh.web) as fresh:
        assert (await fresh.request("/headers")).status == 200


# ------------------------------------------------------------------------------------------- reload


@pytest.mark.slow
async def test_weight_change_applies_within_a_second_without_failures(mesh: Mesh) -> None:
    results: list[tuple[float, int, str]] = []
    changed_at = 0.0

    async def worker() -> None:
        async with mesh.client.http(mesh.search) as session:
            while changed_at == 0.0 or trio.current_time() < changed_at + 2.5:
                started = trio.current_time()
                reply = await session.request("/search")
                results.append((started, reply.status, reply.version))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(worker)
        await trio.sleep(1.5)
        write_view(mesh.config, build_view(mesh.block, v1=100, v2=0, version="2"))
        changed_at = trio.current_time()
    assert {status for _, status, _ in results} == {200}, "no request failed during the change"
    before = [version for started, _, version in results if started < changed_at]
    settled = [version for started, _, version in results if started > changed_at + 1.0]
    assert "v2" in before and len(before) > 200
    assert len(settled) > 200 and set(settled) == {"v1"}, "new requests follow the new weights within 1 s"
    host, port = split(mesh.waypoint.addresses["admin"])
    dump = (await http_request(host, port, "GET", "/config_dump")).json()
    assert dump["view"]["version"] == "2"
    split_route = next(r for r in dump["routes"] if r["service"] == f"{SEARCH}:80")["routes"][-1]
    assert [d["weight"] for d in split_route["destinations"]] == [100, 0]
