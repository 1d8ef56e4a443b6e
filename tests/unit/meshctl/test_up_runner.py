"""The runner's small decisions: capture mode, node names, the control plane's address."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from meshctl.runner import up
from meshctl.runner.addresses import AddressPlan, mesh_block
from meshctl.runner.lock import StateDirBusy, StateDirLock
from meshctl.runner.up import MeshRunner, UpError, UpOptions, choose_capture, control_plane_address, node_names


def test_proxy_mode_is_taken_when_asked_for() -> None:
    assert choose_capture("proxy") == ("proxy", "requested")


def test_auto_takes_netns_where_it_can_run_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up, "netns_available", lambda: (True, "root with iproute2 and iptables"))
    assert choose_capture("auto") == ("netns", "auto: root with iproute2 and iptables")
    assert choose_capture("netns") == ("netns", "requested")


def test_auto_falls_back_to_proxy_and_netns_is_refused_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(up, "netns_available", lambda: (False, "not root"))
    mode, why = choose_capture("auto")
    assert mode == "proxy" and "not root" in why
    with pytest.raises(UpError, match="not possible here: not root") as caught:
        choose_capture("netns")
    assert "--capture proxy" in str(caught.value)


def test_node_names() -> None:
    assert node_names(3) == ["node-1", "node-2", "node-3"]
    for bad in (0, 251):
        with pytest.raises(UpError, match=r"outside 1\.\.250"):
            node_names(bad)


def test_control_plane_address_is_in_the_mesh_block_and_never_a_node_or_pod(tmp_path: Path) -> None:
    block = mesh_block(tmp_path)
    address = ipaddress.IPv4Address(control_plane_address(block))
    plan = AddressPlan(block)
    assert address in block
    assert str(address) not in {plan.node_address(i) for i in range(250)}
    assert address < ipaddress.IPv4Address(plan.allocate_pod())


async def test_a_second_runner_on_a_held_state_dir_is_refused_before_starting_anything(tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    holder = StateDirLock(tmp_path / "state")
    holder.acquire()
    try:
        runner = MeshRunner(UpOptions(files=(manifest,), state_dir=tmp_path / "state"), report=lambda line: None)
        with pytest.raises(StateDirBusy, match="already running") as caught:
            await runner.run()
        assert runner.finished.is_set()
        assert not (tmp_path / "state" / "config").exists()
        assert "kill" in str(caught.value)
    finally:
        holder.release()
