"""``meshctl completion bash|zsh|fish``: the shell completion script, from click's own generator.

Usage: ``source <(meshctl completion bash)`` (or write it to the shell's completion directory).
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (e.g. `source <(meshctl completion bash)`)."""
    root = ctx.find_root()
    completer_class = get_completion_class(shell)
    if completer_class is None:  # click knows all three; guard for a click without one
        raise click.ClickException(f"no completion support for {shell} in this click version")
    completer = completer_class(root.command, {}, root.info_name or "meshctl", "_MESHCTL_COMPLETE")
    click.echo(completer.source())
