"""``meshctl ztunnel-config workloads|services|policies|certificates``: what each ztunnel holds.

Like ``istioctl ztunnel-config``, it reads every ztunnel's own ``/config_dump`` (found through the
runner's status file), so it shows what the data plane really has — not what istiod_lite meant to
send. The table rows are built by pure functions over the dump's JSON.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import trio
import yaml

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.errors import MeshError
from meshctl.control_plane import DEFAULT_STATE_DIR
from meshctl.runner.state import read_status

Row = tuple[str, ...]

COLUMNS: Mapping[str, Row] = {
    "workloads": ("NODE", "NAMESPACE", "NAME", "ADDRESS", "PROTOCOL", "SERVICE ACCOUNT", "WAYPOINT"),
    "services": ("NODE", "NAMESPACE", "HOSTNAME", "VIPS", "PORTS", "WAYPOINT"),
    "policies": ("NODE", "NAMESPACE", "NAME", "SCOPE", "ACTION", "RULES"),
    "certificates": ("NODE", "IDENTITY", "STATE", "NOT AFTER", "SERIAL"),
}


def _waypoint(entry: Mapping[str, Any]) -> str:
    waypoint = entry.get("waypoint")
    if not waypoint:
        return "-"
    hostname = waypoint.get("hostname")
    if hostname:
        return str(hostname.get("hostname", "?"))
    address = waypoint.get("address") or {}
    return str(address.get("address", "?"))


def _workload(node: str, w: Mapping[str, Any]) -> Row:
    return (
        node, str(w.get("namespace", "")), str(w.get("name", "")), ",".join(w.get("addresses", [])) or "-",
        str(w.get("tunnel_protocol", "HBONE")), str(w.get("service_account", "default")), _waypoint(w),
    )


def _service(node: str, s: Mapping[str, Any]) -> Row:
    vips = ",".join(str(v.get("address", "")) for v in s.get("vips", [])) or "-"
    ports = ",".join(f"{p['service_port']}>{p.get('target_port', p['service_port'])}" for p in s.get("ports", []))
    return (node, str(s.get("namespace", "")), str(s.get("hostname", "")), vips, ports or "-", _waypoint(s))


def _policy(node: str, p: Mapping[str, Any]) -> Row:
    return (
        node, str(p.get("namespace", "")), str(p.get("name", "")), str(p.get("scope", "WORKLOAD_SELECTOR")),
        str(p.get("action", "ALLOW")), str(len(p.get("rules", []))),
    )


def _certificate(node: str, c: Mapping[str, Any]) -> Row:
    return (node, str(c["identity"]), str(c["state"]), str(c.get("not_after", "-")), str(c.get("serial", "-")))


ROW_BUILDERS: Mapping[str, Callable[[str, Mapping[str, Any]], Row]] = {
    "workloads": _workload,
    "services": _service,
    "policies": _policy,
    "certificates": _certificate,
}


def rows(section: str, dumps: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """One row per entry of ``section`` in each node's dump (nodes in name order)."""
    build = ROW_BUILDERS[section]
    return [build(node, entry) for node in sorted(dumps) for entry in dumps[node].get(section, [])]


def render_table(header: Row, body: Sequence[Row]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=False)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *body))


def _admin_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"bad admin address {url!r}")
    return parts.hostname, parts.port


async def _config_dump(admin: str) -> dict[str, Any]:
    host, port = _admin_address(admin)
    response = await http_request(host, port, "GET", "/config_dump", timeout=10)
    document: dict[str, Any] = response.json()
    return document


def fetch_config_dump(admin: str) -> dict[str, Any]:
    """One proxy's ``/config_dump`` (blocking; for CLI verbs)."""
    return trio.run(_config_dump, admin)


async def fetch_dumps(ztunnels: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """node → that node's ztunnel ``/config_dump``."""
    return {node: await _config_dump(admin) for node, admin in sorted(ztunnels.items())}


@click.command(name="ztunnel-config")
@click.argument("section", type=click.Choice(sorted(COLUMNS)))
@click.option("--node", help="Only this node's ztunnel.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_STATE_DIR,
              show_default=True, help="The mesh's state directory (where `meshctl up` keeps it).")
def ztunnel_config(section: str, node: str | None, output: str, state_dir: Path) -> None:
    """What each ztunnel holds: workloads, services, policies or certificates (from its /config_dump)."""
    try:
        status = read_status(state_dir)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    ztunnels = {
        str(p.get("node")): str(p["admin"])
        for p in status.get("proxies", [])
        if p.get("kind") == "ztunnel" and p.get("admin") and (node is None or p.get("node") == node)
    }
    if not ztunnels:
        raise click.ClickException(f"no ztunnel{f' on node {node}' if node else ''} in the mesh at {state_dir}")
    try:
        dumps = trio.run(functools.partial(fetch_dumps, ztunnels))
    except (AdminRequestFailed, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read a ztunnel's /config_dump: {exc}") from exc
    if output == "table":
        click.echo(render_table(COLUMNS[section], rows(section, dumps)))
        return
    data = {name: dump.get(section, []) for name, dump in dumps.items()}
    click.echo(json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False), nl=False)
    if output == "json":
        click.echo()
