"""Shared by the operator verbs: read a resource back from istiod_lite, apply built manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from meshctl.commands.common import resource_name, run_call
from meshctl.control_plane import ControlPlaneClient


def apply_manifests(state_dir: Path, istiod_admin: str | None, manifests: list[dict[str, Any]]) -> None:
    """Apply through istiod_lite and print kubectl-style result lines (exit 1 with every error)."""
    text = yaml.safe_dump_all(manifests, sort_keys=False)

    async def call(client: ControlPlaneClient) -> Any:
        return await client.apply(text, source="meshctl")

    answer = run_call(state_dir, istiod_admin, call)
    for warning in answer.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    for row in answer["results"]:
        click.echo(f"{resource_name(row)} {row['result']}")


def current_manifest(state_dir: Path, istiod_admin: str | None, kind: str, name: str) -> dict[str, Any] | None:
    """The manifest of a cluster-scoped resource as istiod_lite holds it, or None."""

    async def call(client: ControlPlaneClient) -> Any:
        return await client.resources(kind, None)

    answer = run_call(state_dir, istiod_admin, call)
    return next((dict(item["manifest"]) for item in answer["items"] if item["name"] == name), None)
