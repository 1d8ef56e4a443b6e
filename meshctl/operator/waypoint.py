"""``meshctl waypoint apply|list|delete``: waypoints as Gateway API Gateways of class istio-waypoint.

As with istioctl, a waypoint is an ordinary ``Gateway`` (label ``istio.io/waypoint-for``, one HBONE
listener on 15008); ``--enroll-namespace`` also labels the namespace ``istio.io/use-waypoint`` so
its services send their traffic through it. The runner (or the Kubernetes waypoint controller)
starts the proxy; ``--wait`` waits until it reports ready.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import yaml

from meshcore.errors import MeshError
from meshctl.cluster import cluster_kubeconfig, gateway_programmed
from meshctl.commands.common import control_plane_options, run_call
from meshctl.control_plane import ControlPlaneClient
from meshctl.operator.apply import apply_manifests, current_manifest
from meshctl.operator.manifests import namespace_with_labels
from meshctl.operator.ztunnel_config import fetch_config_dump, render_table
from meshctl.runner.state import read_status

WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_FOR = "istio.io/waypoint-for"
USE_WAYPOINT = "istio.io/use-waypoint"


def waypoint_gateway(name: str, namespace: str, traffic_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "labels": {WAYPOINT_FOR: traffic_type}},
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def _waypoint_ready(state_dir: Path, namespace: str, name: str) -> bool:
    try:
        status = read_status(state_dir)
    except MeshError:
        return False
    proxy_name = f"waypoint-{namespace}-{name}"
    return any(p.get("kind") == "waypoint" and p.get("name") == proxy_name and p.get("ready")
               for p in status.get("proxies", []))


@click.group()
def waypoint() -> None:
    """Deploy, list and remove waypoints (L7 proxies) for a namespace."""


@waypoint.command(name="apply")
@click.option("-n", "--namespace", required=True)
@click.option("--name", default="waypoint", show_default=True)
@click.option("--for", "traffic_type", type=click.Choice(["service", "workload", "all", "none"]),
              default="service", show_default=True, help="Which traffic the waypoint handles.")
@click.option("--enroll-namespace", is_flag=True, help="Label the namespace istio.io/use-waypoint=NAME.")
@click.option("--wait", is_flag=True, help="Wait (up to --timeout) until the waypoint proxy is ready.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --wait waits.")
@control_plane_options
def apply_waypoint(
    namespace: str, name: str, traffic_type: str, enroll_namespace: bool, wait: bool, timeout: float,
    state_dir: Path, istiod_admin: str | None,
) -> None:
    """Create or update the waypoint Gateway NAME in NAMESPACE."""
    manifests = [waypoint_gateway(name, namespace, traffic_type)]
    if enroll_namespace:
        existing = current_manifest(state_dir, istiod_admin, "Namespace", namespace)
        manifests.insert(0, namespace_with_labels(existing, namespace, {USE_WAYPOINT: name}))
    apply_manifests(state_dir, istiod_admin, manifests)
    if wait:
        deadline = time.monotonic() + timeout
        kubeconfig = cluster_kubeconfig()
        while not (gateway_programmed(kubeconfig, namespace, name) if kubeconfig is not None
                   else _waypoint_ready(state_dir, namespace, name)):
            if time.monotonic() > deadline:
                raise click.ClickException(f"waypoint {namespace}/{name} not ready after {timeout:.0f}s "
                                           "(see `meshctl status` and the logs in the state directory)")
            time.sleep(0.2)
        click.echo(f"waypoint {namespace}/{name} ready")


@waypoint.command(name="list")
@click.option("-n", "--namespace", help="Only this namespace.")
@control_plane_options
def list_waypoints(namespace: str | None, state_dir: Path, istiod_admin: str | None) -> None:
    """Waypoint Gateways, what they serve, and whether their proxy is ready."""

    async def call(client: ControlPlaneClient) -> Any:
        return await client.resources("Gateway", namespace)

    items = run_call(state_dir, istiod_admin, call)["items"]
    rows = [("NAMESPACE", "NAME", "FOR", "READY")]
    for item in items:
        manifest = item["manifest"]
        if manifest.get("spec", {}).get("gatewayClassName") != WAYPOINT_CLASS:
            continue
        labels = manifest.get("metadata", {}).get("labels") or {}
        ready = _waypoint_ready(state_dir, item["namespace"], item["name"])
        rows.append((item["namespace"], item["name"], labels.get(WAYPOINT_FOR, "service"), str(ready).lower()))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@waypoint.command(name="delete")
@click.argument("name")
@click.option("-n", "--namespace", required=True)
@control_plane_options
def delete_waypoint(name: str, namespace: str, state_dir: Path, istiod_admin: str | None) -> None:
    """Remove the waypoint Gateway NAME (its proxy stops; services fall back to ztunnel-only)."""
    text = yaml.safe_dump(waypoint_gateway(name, namespace, "service"))

    async def call(client: ControlPlaneClient) -> Any:
        return await client.delete(text, source="meshctl")

    answer = run_call(state_dir, istiod_admin, call)
    for row in answer["results"]:
        click.echo(f"gateway {row['namespace']}/{row['name']} {row['result']}")
    if any(row["result"] != "deleted" for row in answer["results"]):
        raise SystemExit(1)


@waypoint.command(name="status")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=Path(".mesh"),
              show_default=True, help="The mesh's state directory (where `meshctl up` keeps it).")
def waypoint_status(state_dir: Path) -> None:
    """Each running waypoint proxy: ready or not, its admin address, and the view version it serves."""
    try:
        status = read_status(state_dir)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    rows: list[tuple[str, ...]] = []
    for proxy in status.get("proxies", []):
        if proxy.get("kind") != "waypoint":
            continue
        version = "-"
        if proxy.get("ready") and proxy.get("admin"):
            try:
                dump = fetch_config_dump(str(proxy["admin"]))
                version = str(dump.get("view", {}).get("version", "-"))
            except (OSError, ValueError, MeshError) as exc:
                version = f"unreachable ({exc})"
        rows.append((str(proxy["name"]), str(proxy.get("ready", False)).lower(), str(proxy.get("admin", "-")), version))
    if not rows:
        click.echo(f"no waypoint is running in the mesh at {state_dir}")
        return
    click.echo(render_table(("NAME", "READY", "ADMIN", "VIEW VERSION"), rows))
