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
from tests.integration.ztunnel_mesh import Pod, free_block, split, write_cert_dir, write_local_config, ztunnel_args
from tests.support.processes import Component, Spawner
from tests.unit.waypoint.binomial import interval_999
from waypoint.authz import Action, L7Policy, Operation, Rule, Source
from waypoint.model import (
    ClusterKey,
    ClusterPolicy,
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
        Route(name="slow", action=to(WEB), matches=prefix("/slow"), timeout=0.3),
        Route(name="eject", action=to(WEB, "pair"), matches=prefix("/eject")),
        Route(name="admin", action=to(WEB), matches=prefix("/admin")),
        Route(name="private", action=to(WEB), matches=prefix("/private")),
        Route(name="headers", action=to(WEB), matches=prefix("/headers")),
    )
    ejecting = ClusterPolicy(outlier_detection=OutlierDetection(
        consecutive_5xx=3, interval=0.2, base_ejection_time=1.0, max_ejection_percent=100))
    clusters = (
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v1"),
                      endpoints=(endpoint(p["search-v1"], "v1", "search"),)),
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v2"),
                      endpoints=(endpoint(p["search-v2"], "v2", "search"),)),
        ClusterConfig(key=ClusterKey(hostname=SEARCH, port=80, subset="v3")),
        ClusterConfig(key=ClusterKey(hostname=WEB, port=80), endpoints=(endpoint(p["web"], "v1", "web"),)),
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
