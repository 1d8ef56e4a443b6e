"""The top-level ``meshctl`` click group; each verb lives in its own module and registers here."""

from __future__ import annotations

from pathlib import Path

import click

from meshctl.commands import register as register_control_plane_verbs
from meshctl.commands_up import register as register_runner_verbs
from meshctl.install import install
from meshctl.operator.verbs import register as register_operator_verbs
from meshctl.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Act on the Kubernetes cluster of this kubeconfig (apply, namespace, waypoint apply, "
                   "canary set) instead of the local mesh.")
@click.pass_context
def cli(ctx: click.Context, kubeconfig: Path | None) -> None:
    """Operate an ambient-style service mesh: validate, run and inspect it."""
    ctx.obj = {"kubeconfig": kubeconfig}


cli.add_command(validate)
cli.add_command(install)  # Kubernetes manifests of deploy/ (meshctl/install.py)
register_control_plane_verbs(cli)  # apply, delete, get, proxy-status (meshctl/commands/)
register_runner_verbs(cli)  # up, status, exec, logs, demo (meshctl/commands_up.py)
register_operator_verbs(cli)  # namespace, canary, version (meshctl/operator/)
