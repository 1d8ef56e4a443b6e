"""Running ``ip``/``iptables`` as child processes, with failures turned into errors that say what ran."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

import trio

from ztunnel.capture.errors import CommandFailed


async def run_command(argv: Sequence[str], *, stdin: bytes = b"", check: bool = True) -> str:
    """Run ``argv`` to completion and return its stdout; raise :class:`CommandFailed` on a non-zero exit."""
    proc = await trio.run_process(
        list(argv), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise CommandFailed(
            f"{argv[0]} exited with {proc.returncode}", command=shlex.join(argv), stderr=stderr or "(empty)"
        )
    return str(proc.stdout.decode(errors="replace"))


def run_command_sync(argv: Sequence[str], *, check: bool = True) -> str:
    """Blocking twin for cleanup paths that run outside trio (atexit, crash recovery from a CLI)."""
    proc = subprocess.run(list(argv), capture_output=True, check=False)
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise CommandFailed(
            f"{argv[0]} exited with {proc.returncode}", command=shlex.join(argv), stderr=stderr or "(empty)"
        )
    return proc.stdout.decode(errors="replace")
