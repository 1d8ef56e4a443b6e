"""``meshctl get KIND [-n NS] [-o yaml|json]``: the resources in force in the running mesh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from meshctl.commands.common import control_plane_options, run_call
from meshctl.control_plane import ControlPlaneClient


def table(items: list[dict[str, Any]]) -> str:
    rows = [("NAMESPACE", "NAME", "KIND", "SOURCE")]
    rows += [(i["namespace"] or "-", i["name"], i["kind"], i["source"]) for i in items]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command()
@click.argument("kind", required=False, default="all")
@click.option("-n", "--namespace", help="Only this namespace (cluster-scoped resources always show).")
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True)
@control_plane_options
def get(kind: str, namespace: str | None, output: str, state_dir: Path, istiod_admin: str | None) -> None:
    """List resources of KIND (Service, svc, virtualservices, …; default: all) that are in force."""
    if output == "yaml":

        async def call_yaml(client: ControlPlaneClient) -> str:
            return await client.resources_yaml(kind, namespace)

        click.echo(run_call(state_dir, istiod_admin, call_yaml), nl=False)
        return

    async def call(client: ControlPlaneClient) -> dict[str, Any]:
        answer: dict[str, Any] = await client.resources(kind, namespace)
        return answer

    answer = run_call(state_dir, istiod_admin, call)
    for source, errors in answer.get("errors", {}).items():
        for error in errors:
            click.echo(f"warning: not in force ({source}): {error}", err=True)
    if output == "json":
        click.echo(json.dumps(answer["items"], indent=2))
    elif answer["items"]:
        click.echo(table(answer["items"]))
    else:
        click.echo("No resources found.", err=True)
