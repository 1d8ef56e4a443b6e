"""Fixtures for the netns tests: a fabric per test under a fresh prefix, checked for leaks afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.netns.helpers import leftovers
from ztunnel.capture.fabric import Fabric
from ztunnel.capture.names import new_prefix


@pytest.fixture
async def fabric(tmp_path: Path) -> AsyncIterator[Fabric]:
    """A created fabric; destroyed afterwards, and nothing of it may remain."""
    fab = Fabric(tmp_path / "fabric.json", prefix=new_prefix())
    try:
        await fab.create()
        yield fab
    finally:
        with trio.CancelScope(shield=True):
            await fab.destroy()
    assert leftovers(fab.prefix) == {"netns": [], "links": [], "mounts": []}


@pytest.fixture
def netns_fds() -> Iterator[dict[str, int]]:
    """Open pod namespaces by name on demand (``fds[netns] = open_netns(netns)``), closed afterwards."""
    fds: dict[str, int] = {}
    try:
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)
