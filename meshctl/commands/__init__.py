"""meshctl verbs that talk to a running istiod_lite: apply, delete, get, proxy-status.

``register(cli)`` adds them to the top-level group (``meshctl/cli.py`` calls it), so this package
never imports the group itself and the two modules cannot import each other in a cycle.
"""

from __future__ import annotations

import click

from meshctl.commands.apply import apply, delete
from meshctl.commands.get import get
from meshctl.commands.proxy_status import proxy_status

COMMANDS: tuple[click.Command, ...] = (apply, delete, get, proxy_status)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
