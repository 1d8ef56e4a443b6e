"""``meshctl apply -f`` and ``meshctl delete -f``: send resource files to istiod_lite.

Files are validated locally first (the same ``schemas`` validation istiod_lite runs), so errors are
reported against file names and document numbers without a round trip; istiod_lite validates again
and stores all of it or none of it. ``-n`` sets the namespace of resources that name none (kubectl).
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from meshctl.cluster import apply_to_cluster, cluster_kubeconfig
from meshctl.commands.common import control_plane_options, resource_name, run_call
from meshctl.control_plane import ControlPlaneClient
from schemas.load import load_paths, yaml_files

_FILES = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="A YAML file or a directory of them; repeat for more.",
)
_NAMESPACE = click.option("-n", "--namespace", help="Namespace for resources that name none.")


def read_documents(paths: tuple[Path, ...]) -> tuple[str, str]:
    """All documents of all files as one YAML stream, and a short description of the sources."""
    files = [file for path in paths for file in yaml_files(path)]
    if not files:
        raise click.UsageError(f"no *.yaml or *.yml files in {', '.join(map(str, paths))}")
    texts = [file.read_text(encoding="utf-8") for file in files]
    return "\n---\n".join(texts), ",".join(str(f) for f in files)[:200]


def _validate_locally(paths: tuple[Path, ...]) -> None:
    result = load_paths(paths)
    if result.ok:
        return
    for error in result.errors:
        click.echo(f"error: {error}", err=True)
    click.echo(f"meshctl: {len(result.errors)} error(s); nothing was applied", err=True)
    raise SystemExit(1)


def _print(results: list[dict[str, str]], warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for row in results:
        note = f" ({row['note']})" if row.get("note") else ""
        click.echo(f"{resource_name(row)} {row['result']}{note}")


@click.command()
@_FILES
@_NAMESPACE
@control_plane_options
def apply(paths: tuple[Path, ...], namespace: str | None, state_dir: Path, istiod_admin: str | None) -> None:
    """Create or update resources in the running mesh (all of them, or none if any is invalid)."""
    _validate_locally(paths)
    text, source = read_documents(paths)
    kubeconfig = cluster_kubeconfig()
    if kubeconfig is not None:
        documents = [doc for doc in yaml.safe_load_all(text) if doc]
        if namespace is not None:
            for doc in documents:
                doc.setdefault("metadata", {}).setdefault("namespace", namespace)
        apply_to_cluster(kubeconfig, documents)
        return

    async def call(client: ControlPlaneClient) -> dict[str, list[dict[str, str]]]:
        answer: dict[str, list[dict[str, str]]] = await client.apply(text, namespace=namespace, source=source)
        return answer

    answer = run_call(state_dir, istiod_admin, call)
    _print(answer["results"], [str(w) for w in answer.get("warnings", [])])


@click.command()
@_FILES
@_NAMESPACE
@control_plane_options
def delete(paths: tuple[Path, ...], namespace: str | None, state_dir: Path, istiod_admin: str | None) -> None:
    """Delete the resources the files name from the running mesh (applied ones; files stay files)."""
    text, source = read_documents(paths)

    async def call(client: ControlPlaneClient) -> dict[str, list[dict[str, str]]]:
        answer: dict[str, list[dict[str, str]]] = await client.delete(text, namespace=namespace, source=source)
        return answer

    answer = run_call(state_dir, istiod_admin, call)
    _print(answer["results"], [])
    if any(row["result"] != "deleted" for row in answer["results"]):
        raise SystemExit(1)
