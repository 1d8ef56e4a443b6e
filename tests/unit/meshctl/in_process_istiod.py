"""A real istiod_lite in the test's trio loop, and click commands run against it from a worker thread.

Each command runs through click's CliRunner in a worker thread (the command runs its own trio loop)
while the test's trio loop serves istiod_lite, so the whole path — finding the admin address in
``istiod.json``, HTTP, validation, stores — is the real one.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import click
import structlog
import trio
from click.testing import CliRunner, Result

from istiod_lite.server import Istiod, IstiodOptions
from meshcore.telemetry.logs import configure_logging


@contextmanager
def logs_to_the_real_stderr() -> Iterator[None]:
    """CliRunner swaps sys.stdout for the command's output; istiod_lite's logs must not land in it."""
    configure_logging("warning", stream=sys.__stderr__)
    yield
    structlog.reset_defaults()


@asynccontextmanager
async def running_istiod(tmp_path: Path) -> AsyncIterator[Path]:
    """istiod_lite on ephemeral loopback ports; yields its state directory."""
    state = tmp_path / "state"
    istiod = Istiod(IstiodOptions(state_dir=state, control_port=0, admin_port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(istiod.run)
        yield state
        nursery.cancel_scope.cancel()


async def invoke(group: click.Group, *args: str) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(lambda: runner.invoke(group, list(args), catch_exceptions=False))
