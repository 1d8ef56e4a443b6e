"""``meshctl proxy-status``: is every proxy running the config istiod_lite publishes? (istioctl's words)

One row per proxy, one column per pushed type with SYNCED (ACKed the newest version), STALE (a push
is in flight or pending) or NACKED (rejected the newest version; it runs on its last good state), and
the NACK errors underneath, because "NACKED" alone does not tell anyone what to fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from meshctl.commands.common import control_plane_options, run_call
from meshctl.control_plane import ControlPlaneClient


def render(status: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = status["proxies"]
    if not rows:
        return "No proxies connected."
    types = sorted({row["type"] for row in rows})
    by_proxy: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_proxy.setdefault(row["proxy"], {})[row["type"]] = row
    header = ["NAME", *(t.upper() for t in types)]
    lines = [header]
    for proxy, per_type in sorted(by_proxy.items()):
        lines.append([proxy, *(per_type[t]["state"] if t in per_type else "-" for t in types)])
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    out = ["   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    for row in rows:
        if row.get("nack_error") and row["state"] == "NACKED":
            out.append(f"{row['proxy']} {row['type']} NACK (version {row['sent_version']}): {row['nack_error']}")
    return "\n".join(out)


@click.command("proxy-status")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@control_plane_options
def proxy_status(output: str, state_dir: Path, istiod_admin: str | None) -> None:
    """Per proxy and pushed type: SYNCED, STALE or NACKED (with the proxy's error)."""

    async def call(client: ControlPlaneClient) -> dict[str, Any]:
        answer: dict[str, Any] = await client.proxy_status()
        return answer

    status = run_call(state_dir, istiod_admin, call)
    click.echo(json.dumps(status, indent=2) if output == "json" else render(status))
