"""``meshctl validate``: check resource files the way the control plane would, before applying them.

Every error is printed (one line each, with file, document, resource and field path) so a user can
fix a file in one pass; warnings are printed too but do not change the exit status. ``-o json``
gives the same verdict as one JSON object, for CI jobs and editors (it includes each issue's line).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import click

from schemas.common import namespace_of
from schemas.load import LoadResult, load_paths


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def summary(result: LoadResult) -> str:
    """The line a valid run prints: ``3 resources valid (2 DestinationRule, 1 VirtualService), 1 warning``."""
    counts = Counter(r.kind for r in result.resources)
    text = f"{_plural(sum(counts.values()), 'resource')} valid"
    if counts:
        text += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) + ")"
    if result.warnings:
        text += f", {_plural(len(result.warnings), 'warning')}"
    return text


def as_json(result: LoadResult) -> dict[str, Any]:
    """The machine-readable verdict: validity, what loaded from where, and every issue with its line."""
    resources = [
        {
            "kind": item.resource.kind,
            "apiVersion": item.resource.api_version,
            "namespace": namespace_of(item.resource.metadata),
            "name": item.resource.metadata.name,
            "source": item.origin.source,
            "document": item.origin.document_index,
        }
        for item in result.loaded
    ]
    return {
        "valid": result.ok,
        "resources": resources,
        "errors": [attrs.asdict(issue) for issue in result.errors],
        "warnings": [attrs.asdict(issue) for issue in result.warnings],
    }


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
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Report format.",
)
def validate(paths: tuple[Path, ...], output: str) -> None:
    """Validate Istio, Gateway API and Kubernetes resources; exit 1 if any is invalid."""
    result = load_paths(paths)
    if output == "json":
        click.echo(json.dumps(as_json(result), indent=2))
        raise SystemExit(0 if result.ok else 1)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.errors:
        for error in result.errors:
            click.echo(f"error: {error}", err=True)
        click.echo(f"{_plural(len(result.errors), 'error')} found", err=True)
        raise SystemExit(1)
    click.echo(summary(result))
