"""Child commands: output returned, failures reported with the command line and its stderr."""

from __future__ import annotations

import pytest

from ztunnel.capture.commands import run_command, run_command_sync
from ztunnel.capture.errors import CommandFailed


async def test_stdout_and_stdin() -> None:
    assert await run_command(["cat"], stdin=b"rules\n") == "rules\n"


async def test_failure_names_command_and_stderr() -> None:
    with pytest.raises(CommandFailed, match="sh exited with 3") as info:
        await run_command(["sh", "-c", "echo no such table >&2; exit 3"])
    message = str(info.value)
    assert "echo no such table" in message and "stderr: no such table" in message
    assert "needs root, iproute2 and iptables" in message


async def test_unchecked_failure_returns_output() -> None:
    assert await run_command(["sh", "-c", "echo partial; exit 1"], check=False) == "partial\n"


def test_sync_twin_behaves_the_same() -> None:
    assert run_command_sync(["echo", "x"]) == "x\n"
    with pytest.raises(CommandFailed, match="stderr: \\(empty\\)"):
        run_command_sync(["false"])
