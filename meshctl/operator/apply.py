"""Shared by the operator verbs: read a resource back from istiod_lite, apply built manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from meshctl.cluster import apply_to_cluster, cluster_kubeconfig, get_from_cluster
from meshctl.commands.common import resource_name, run_call
from meshctl.control_plane import ControlPlaneClient


def apply_manifests(state_dir: Path, istiod_admin: str | None, manifests: list[dict[str, Any]]) -> None:
    """Apply through istiod_lite (or the cluster with ``meshctl --kubeconfig``) and print kubectl-style
    result lines (exit 1 with every error)."""
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is not None:
        apply_to_cluster(kubeconfig, manifests)
        return
    text = yaml.safe_dump_all(manifests, sort_keys=False)

    async def call(client: ControlPlaneClient) -> Any:
        return await client.apply(text, source="meshctl")

    answer = run_call(state_dir, istiod_admin, call)
    for warning in answer.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    for row in answer["results"]:
        click.echo(f"{resource_name(row)} {row['result']}")


def current_manifest(state_dir: Path, istiod_admin: str | None, kind: str, name: str) -> dict[str, Any] | None:
    """The manifest of a cluster-scoped resource as istiod_lite (or the cluster) holds it, or None."""
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is not None:
        return get_from_cluster(kubeconfig, kind, name)

    async def call(client: ControlPlaneClient) -> Any:
        return await client.resources(kind, None)

    answer = run_call(state_dir, istiod_admin, call)
    return next((dict(item["manifest"]) for item in answer["items"] if item["name"] == name), None)
