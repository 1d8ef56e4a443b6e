"""Suite-wide fixtures: the process harness and the skip rules for the optional markers."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.processes import spawn

__all__ = ["spawn"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`netns` tests need root with iproute2 and iptables; say so instead of failing when absent."""
    has_netns = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None
    if has_netns:
        return
    reason = "netns tests need root, iproute2 and iptables (make test installs them as root)"
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
