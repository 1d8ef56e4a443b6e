"""Namespace naming and opening, the parts that need no privileges."""

from __future__ import annotations

import os

import pytest

from meshcore.net.errors import NetnsError
from meshcore.net.netns import netns_inode, netns_path, open_netns


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ("am-abc12-pod-web", "/run/netns/am-abc12-pod-web"),
        ("/proc/123/ns/net", "/proc/123/ns/net"),
        ("/run/netns/x", "/run/netns/x"),
    ],
)
def test_netns_path(given: str, path: str) -> None:
    assert netns_path(given) == path


def test_open_netns_of_our_own_thread_has_our_inode() -> None:
    fd = open_netns("/proc/thread-self/ns/net")
    try:
        assert netns_inode(fd) == netns_inode()
    finally:
        os.close(fd)


def test_missing_namespace_error_names_path_and_what_to_check() -> None:
    with pytest.raises(NetnsError, match="/run/netns/am-zz-does-not-exist") as info:
        open_netns("am-zz-does-not-exist")
    assert "ls -l /run/netns" in str(info.value)
