"""Loopback address plans per mesh and the one-runner-per-state-directory rule."""

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.runner.addresses import AddressPlan, AddressSpaceExhausted, mesh_block
from meshctl.runner.lock import StateDirBusy, StateDirLock


def test_each_state_dir_gets_a_stable_block_inside_loopback(tmp_path: Path) -> None:
    block = mesh_block(tmp_path / "a")
    assert block == mesh_block(tmp_path / "a")
    assert block.prefixlen == 16 and block.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    assert block.network_address.packed[1] not in (0, 255)


def test_nodes_and_pods_never_overlap() -> None:
    plan = AddressPlan(ipaddress.IPv4Network("127.42.0.0/16"))
    assert [plan.node_address(i) for i in range(2)] == ["127.42.0.1", "127.42.0.2"]
    first, second = plan.allocate_pod(), plan.allocate_pod()
    assert (first, second) == ("127.42.1.0", "127.42.1.1")
    plan.release_pod(first)
    assert plan.allocate_pod() == first  # lowest free address is reused
    plan.reserve_pod("127.42.1.2")
    assert plan.allocate_pod() == "127.42.1.3"
    with pytest.raises(ValueError, match="not inside"):
        plan.release_pod("127.43.1.0")
    with pytest.raises(AddressSpaceExhausted):
        plan.node_address(250)


def test_second_runner_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    with StateDirLock(tmp_path):
        # Another process (flock is per open file description, so use a real second process).
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from meshctl.runner.lock import StateDirLock\n"
             "try:\n    StateDirLock(Path(sys.argv[1])).acquire()\nexcept Exception as e:\n    print(e)",
             str(tmp_path)],
            capture_output=True, text=True, check=True,
        )
        assert "already running" in probe.stdout and "pid" in probe.stdout and "--state-dir" in probe.stdout
    with StateDirLock(tmp_path):  # released on exit, so the next runner gets it
        pass


def test_same_process_double_acquire_is_refused_too(tmp_path: Path) -> None:
    with StateDirLock(tmp_path), pytest.raises(StateDirBusy):
        StateDirLock(tmp_path).acquire()
