"""``meshctl namespace enroll|unenroll``, ``meshctl canary set`` and ``meshctl version``.

Each verb builds ordinary resources (:mod:`meshctl.operator.manifests`) and sends them through
istiod_lite's apply API, the same path as ``meshctl apply``; istiod_lite validates them again.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import click
import yaml

from meshctl.cluster import cluster_kubeconfig, set_dataplane_mode
from meshctl.commands.common import control_plane_options
from meshctl.control_plane import find_admin
from meshctl.operator.apply import apply_manifests, current_manifest
from meshctl.operator.authz_check import authz
from meshctl.operator.completion import completion
from meshctl.operator.manifests import CanarySpecError, canary_resources, namespace_with_mode, parse_weights
from meshctl.operator.waypoint import waypoint
from meshctl.operator.ztunnel_config import ztunnel_config


def _set_enrollment(namespace: str, state_dir: Path, istiod_admin: str | None, *, enrolled: bool) -> None:
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is not None:  # a merge patch: the namespace's other labels and fields stay as they are
        set_dataplane_mode(kubeconfig, namespace, enrolled)
        return
    existing = current_manifest(state_dir, istiod_admin, "Namespace", namespace)
    apply_manifests(state_dir, istiod_admin, [namespace_with_mode(existing, namespace, enrolled=enrolled)])


@click.group()
def namespace() -> None:
    """Put a namespace's pods in the mesh (ambient) or take them out."""


@namespace.command()
@click.argument("name")
@control_plane_options
def enroll(name: str, state_dir: Path, istiod_admin: str | None) -> None:
    """Label NAME istio.io/dataplane-mode=ambient (its other labels stay)."""
    _set_enrollment(name, state_dir, istiod_admin, enrolled=True)


@namespace.command()
@click.argument("name")
@control_plane_options
def unenroll(name: str, state_dir: Path, istiod_admin: str | None) -> None:
    """Remove istio.io/dataplane-mode from NAME."""
    _set_enrollment(name, state_dir, istiod_admin, enrolled=False)


@click.group()
def canary() -> None:
    """Weighted canary routing with a VirtualService and a DestinationRule."""


@canary.command(name="set")
@click.argument("service")
@click.argument("weights", nargs=-1, required=True)
@click.option("-n", "--namespace", "ns", required=True, help="Namespace of SERVICE.")
@click.option("--host", help="Host clients call (default: SERVICE's own FQDN).")
@click.option("--label", default="version", show_default=True, help="Pod label that names the subsets.")
@click.option("--dry-run", is_flag=True, help="Print the resources instead of applying them.")
@control_plane_options
def set_weights(
    service: str, weights: tuple[str, ...], ns: str, host: str | None, label: str, dry_run: bool,
    state_dir: Path, istiod_admin: str | None,
) -> None:
    """Split SERVICE's traffic by subset, e.g. ``canary set search -n prod v1=95 v2=5``."""
    try:
        parsed = parse_weights(weights)
    except CanarySpecError as exc:
        raise click.UsageError(str(exc)) from exc
    manifests = canary_resources(service, ns, parsed, host=host, label=label)
    if dry_run:
        click.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)
        return
    apply_manifests(state_dir, istiod_admin, manifests)


@click.command()
@control_plane_options
def version(state_dir: Path, istiod_admin: str | None) -> None:
    """The client's version, and the control plane's address when one is running."""
    try:
        client_version = metadata.version("ambient-mesh")
    except metadata.PackageNotFoundError:
        client_version = "unknown (not installed)"
    click.echo(f"client version: {client_version}")
    try:
        target = find_admin(state_dir, istiod_admin)
    except Exception as exc:
        click.echo(f"control plane: not reachable ({exc})")
        return
    click.echo(f"control plane: istiod_lite admin at {target.address}")


def register(group: click.Group) -> None:
    group.add_command(completion)
    group.add_command(waypoint)
    group.add_command(ztunnel_config)
    group.add_command(namespace)
    group.add_command(canary)
    group.add_command(version)
    group.add_command(authz)
