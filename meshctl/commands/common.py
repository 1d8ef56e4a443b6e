"""What every control-plane verb shares: where istiod_lite is, running one call, reporting failures."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from meshcore.errors import MeshError
from meshctl.control_plane import DEFAULT_STATE_DIR, AdminCallFailed, ControlPlaneClient, find_admin

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def control_plane_options(command: F) -> F:
    """``--state-dir`` and ``--istiod-admin``, the two ways to say which mesh."""
    command = click.option(
        "--istiod-admin",
        metavar="HOST:PORT",
        help="istiod_lite's admin address (instead of reading it from the state directory).",
    )(command)
    command = click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=DEFAULT_STATE_DIR,
        show_default=True,
        help="The mesh's state directory (where `meshctl up` keeps it).",
    )(command)
    return command


def run_call(state_dir: Path, istiod_admin: str | None, call: Callable[[ControlPlaneClient], Awaitable[T]]) -> T:
    """Find istiod_lite, run one async call against it; any failure → message on stderr, exit 1."""
    try:
        client = ControlPlaneClient(find_admin(state_dir, istiod_admin))
        return trio.run(functools.partial(call, client))
    except AdminCallFailed as exc:
        for error in exc.errors:
            click.echo(f"error: {error}", err=True)
        click.echo(f"meshctl: {exc}", err=True)
    except MeshError as exc:
        click.echo(f"meshctl: {exc}", err=True)
    raise SystemExit(1)


def resource_name(row: dict[str, str]) -> str:
    """kubectl's ``kind/name`` with the namespace in front when there is one: ``service prod/search``."""
    who = f"{row['namespace']}/{row['name']}" if row.get("namespace") else row["name"]
    return f"{row['kind'].lower()} {who}"
