"""Helpers shared by the netns tests."""

from __future__ import annotations

import subprocess

from meshcore.net.netns import open_netns
from ztunnel.capture.fabric import existing_netns


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Everything of ours the host still shows, the way an operator would look: ip netns / ip link."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {
        "netns": sorted(line.split()[0] for line in netns.splitlines() if line.startswith(prefix)),
        "links": sorted(line for line in links.splitlines() if prefix in line),
        "mounts": list(existing_netns(prefix)),
    }


def open_pod_netns(fds: dict[str, int], netns: str) -> int:
    """Open (once) and remember a pod namespace fd."""
    if netns not in fds:
        fds[netns] = open_netns(netns)
    return fds[netns]
