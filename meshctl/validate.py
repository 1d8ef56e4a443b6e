"""``meshctl validate``: check resource files the way the control plane would, before applying them.

Every error is printed (one line each, with file, document, resource and field path) so a user can
fix a file in one pass; warnings are printed too but do not change the exit status.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from schemas.load import LoadResult, load_paths


def summary(result: LoadResult) -> str:
    """The line a valid run prints: ``3 resources valid (2 DestinationRule, 1 VirtualService), 1 warning``."""
    counts = Counter(r.kind for r in result.resources)
    total = sum(counts.values())
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    text = f"{total} resource{'s' if total != 1 else ''} valid"
    if kinds:
        text += f" ({kinds})"
    if result.warnings:
        text += f", {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}"
    return text


@click.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A YAML file or a directory of them (*.yaml, *.yml); repeat for more.",
)
def validate(paths: tuple[Path, ...]) -> None:
    """Validate Istio, Gateway API and Kubernetes resources; exit 1 if any is invalid."""
    result = load_paths(paths)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.errors:
        for error in result.errors:
            click.echo(f"error: {error}", err=True)
        count = len(result.errors)
        click.echo(
            f"{count} error{'s' if count != 1 else ''} found", err=True
        )
        raise SystemExit(1)
    click.echo(summary(result))
