"""Nothing of ours outlives the fabric: after destroy(), after dropped objects, after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from meshcore.net.netns import listen_tcp_in_netns, open_netns, socket_in_netns
from tests.netns.helpers import leftovers
from ztunnel.capture.fabric import Fabric, cleanup_from_state
from ztunnel.capture.names import new_prefix
from ztunnel.capture.rules import install_pod_rules, render_pod_rules

pytestmark = pytest.mark.netns

NOTHING: dict[str, list[str]] = {"netns": [], "links": [], "mounts": []}


def links_in(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout


async def test_pods_are_wired_to_the_bridge_and_reach_each_other(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "fabric.json", prefix=new_prefix())
    try:
        await fabric.create()
        a = await fabric.create_pod("a")
        b = await fabric.create_pod("b", ip="198.18.0.50")
        assert (a.ip, b.ip) == ("198.18.0.2", "198.18.0.50")
        fabric_links = links_in(fabric.fabric_netns)
        assert f"{a.host_veth}@" in fabric_links and f"master {fabric.bridge}" in fabric_links
        assert "eth0@" in links_in(a.netns)
        fd_a, fd_b = open_netns(a.netns), open_netns(b.netns)
        try:  # across the bridge, without any capture rules: plain TCP from pod a to pod b
            with await listen_tcp_in_netns(fd_b, b.ip, 8080) as listener:
                client = await socket_in_netns(fd_a)
                with client:
                    await client.connect((b.ip, 8080))
                    accepted, peer = await listener.accept()
                    accepted.close()
                    assert peer[0] == a.ip
        finally:
            os.close(fd_a)
            os.close(fd_b)
        recorded = json.loads((tmp_path / "fabric.json").read_text())
        assert sorted(recorded["pods"]) == ["a", "b"]
        await fabric.delete_pod("a")
        assert leftovers(fabric.prefix)["netns"] == sorted([fabric.fabric_netns, b.netns])
    finally:
        await fabric.destroy()
    assert leftovers(fabric.prefix) == NOTHING
    assert not (tmp_path / "fabric.json").exists()


async def test_dropped_fabric_is_removed_from_its_state_file(tmp_path: Path) -> None:
    state = tmp_path / "fabric.json"
    prefix = new_prefix()
    fabric = Fabric(state, prefix=prefix)
    try:
        await fabric.create()
        for name in ("x", "y"):
            pod = await fabric.create_pod(name)
            await install_pod_rules(pod.netns, render_pod_rules())
        del fabric  # "crash": the objects are gone, the kernel state is not
        assert len(leftovers(prefix)["netns"]) == 3
        removed = await cleanup_from_state(state)
        assert sorted(removed) == sorted([f"{prefix}-fabric", f"{prefix}-pod-x", f"{prefix}-pod-y"])
    finally:
        with trio.CancelScope(shield=True):
            await cleanup_from_state(state)
    assert leftovers(prefix) == NOTHING
    assert not state.exists()


CHILD = """
import sys, trio
from pathlib import Path
from ztunnel.capture.fabric import Fabric
from ztunnel.capture.rules import install_pod_rules, render_pod_rules

async def main():
    fabric = Fabric(Path(sys.argv[1]), prefix=sys.argv[2])
    await fabric.create()
    pod = await fabric.create_pod("victim")
    await install_pod_rules(pod.netns, render_pod_rules())
    print("ready", flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


async def test_sigkilled_runner_is_cleaned_up_on_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "fabric.json"
    prefix = new_prefix()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(state), prefix], stdout=subprocess.PIPE, cwd=Path.cwd()
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                assert chunk, "child exited before it was ready"
                line += chunk
        assert line == b"ready\n"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert len(leftovers(prefix)["netns"]) == 2  # SIGKILL left them behind
        await cleanup_from_state(state)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()
            await cleanup_from_state(state)
    assert leftovers(prefix) == NOTHING
