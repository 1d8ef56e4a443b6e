"""A waypoint following a real istiod_lite process (``--istiod``): its certificate from the CA with a
token for its own ServiceAccount only, its view pushed — and a routing change applied while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from meshcore.admin.client import http_request
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import free_block, split

MESH = """\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: prod, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: prod}
spec:
  selector: {app: search}
  ports: [{name: http, port: 8080, targetPort: 8080}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: search, namespace: prod}
spec:
  hosts: [search]
  http:
  - match: [{uri: {prefix: /beta}}]
    route: [{destination: {host: search}}]
  - route: [{destination: {host: search}}]
"""

IDENTITY = "spiffe://cluster.local/ns/prod/sa/waypoint"


async def dump(component: Component) -> dict[str, Any]:
    host, port = split(component.addresses["admin"])
    document: dict[str, Any] = (await http_request(host, port, "GET", "/config_dump")).json()
    return document


async def wait_for_file(path: Path) -> None:
    for _ in range(200):
        if await trio.Path(path).exists():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def start_istiod(spawn: Spawner, tmp_path: Path) -> tuple[Component, Path, Path, Path]:
    """istiod_lite on the mesh above; returns it, its config and state dirs, and the waypoint's token."""
    config_dir, state_dir = tmp_path / "config", tmp_path / "state"
    config_dir.mkdir()
    (config_dir / "mesh.yaml").write_text(MESH)
    istiod = spawn.python_module(
        "istiod", "istiod_lite", "--state-dir", str(state_dir), "--config-dir", str(config_dir),
        "--control-port", "0", "--admin-port", "0", "--nodes", "node-a", "--poll-interval", "0.1")
    token = state_dir / "tokens" / "waypoint-prod-waypoint.token"
    await wait_for_file(token)
    return istiod, config_dir, state_dir, token


async def test_waypoint_takes_certificate_and_view_from_istiod_and_follows_changes(
    spawn: Spawner, tmp_path: Path
) -> None:
    istiod, config_dir, state_dir, token = await start_istiod(spawn, tmp_path)
    address = f"127.{free_block()}.3.1"
    waypoint = spawn.python_module(
        "waypoint", "waypoint", "--address", address, "--identity", IDENTITY,
        "--istiod", f"wss://{istiod.addresses['control']}/v1/xds", "--token-file", str(token),
        "--root-cert", str(state_dir / "root-cert.pem"),
        "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0")
    first: dict[str, Any] = {}
    for _ in range(200):
        first = await dump(waypoint)
        if first["view"]["version"]:
            break
        await trio.sleep(0.05)
    assert first["identity"] == IDENTITY
    assert [s["hostname"] for s in first["services"]] == ["search.prod.svc.cluster.local"]
    host, port = split(waypoint.addresses["readiness"])
    assert (await http_request(host, port, "GET", "/healthz/ready")).status == 200

    (config_dir / "route.yaml").write_text(ROUTE)  # pushed: the waypoint's routes change while it serves
    routes: list[Any] = []
    for _ in range(200):
        latest = await dump(waypoint)
        routes = [r for table in latest["routes"] for r in table["routes"]]
        if latest["view"]["version"] != first["view"]["version"] and len(routes) == 2:
            break
        await trio.sleep(0.05)
    assert len(routes) == 2, routes
    assert "certificate issued" in istiod.stderr_tail(200) and IDENTITY in istiod.stderr_tail(200)


async def test_a_waypoint_token_cannot_obtain_another_identity(spawn: Spawner, tmp_path: Path) -> None:
    istiod, _, state_dir, token = await start_istiod(spawn, tmp_path)
    impostor = spawn.python_module(
        "waypoint", "waypoint", "--address", f"127.{free_block()}.3.1",
        "--identity", "spiffe://cluster.local/ns/prod/sa/search",
        "--istiod", f"wss://{istiod.addresses['control']}/v1/xds", "--token-file", str(token),
        "--root-cert", str(state_dir / "root-cert.pem"),
        "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0", wait_ready=False)
    code = await trio.to_thread.run_sync(impostor.proc.wait, 60)
    assert code != 0
    assert "may obtain only its own identity" in impostor.stderr_tail(40) + istiod.stderr_tail(80)
