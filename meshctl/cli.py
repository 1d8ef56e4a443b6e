"""The top-level ``meshctl`` click group; each verb lives in its own module and registers here."""

from __future__ import annotations

import click

from meshctl.commands import register as register_control_plane_verbs
from meshctl.commands_up import register as register_runner_verbs
from meshctl.install import install
from meshctl.operator.verbs import register as register_operator_verbs
from meshctl.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate an ambient-style service mesh: validate, run and inspect it."""


cli.add_command(validate)
cli.add_command(install)  # Kubernetes manifests of deploy/ (meshctl/install.py)
register_control_plane_verbs(cli)  # apply, delete, get, proxy-status (meshctl/commands/)
register_runner_verbs(cli)  # up, status, exec, logs, demo (meshctl/commands_up.py)
register_operator_verbs(cli)  # namespace, canary, version (meshctl/operator/)
