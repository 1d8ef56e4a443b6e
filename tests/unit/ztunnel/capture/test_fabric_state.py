"""The fabric's state file: what it records, and what it refuses to act on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ztunnel.capture.errors import FabricError, UnsafeName
from ztunnel.capture.fabric import Fabric
from ztunnel.capture.fabric_state import FabricState, PodNetwork, cleanup_commands, cleanup_from_state_sync


def sample_state() -> FabricState:
    pod = PodNetwork(
        name="web", netns="am-abc-pod-web", ip="198.18.0.2", prefix_len=16, host_veth="am-abcv0", veth_index=0
    )
    return FabricState(
        prefix="am-abc",
        subnet="198.18.0.0/16",
        fabric_netns="am-abc-fabric",
        bridge="am-abc-br",
        gateway="198.18.0.1",
        pods={"web": pod},
    )


def test_state_round_trips_through_json() -> None:
    state = sample_state()
    assert FabricState.from_json(state.to_json(), source="t") == state
    assert json.loads(state.to_json())["version"] == 1


def test_cleanup_removes_pods_before_the_fabric() -> None:
    assert cleanup_commands(sample_state()) == [
        ["ip", "netns", "delete", "am-abc-pod-web"],
        ["ip", "netns", "delete", "am-abc-fabric"],
    ]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda raw: raw.update(fabric_netns="default"), UnsafeName),
        (lambda raw: raw["pods"]["web"].update(netns="am-zzz-pod-web"), UnsafeName),
        (lambda raw: raw["pods"]["web"].update(host_veth="eth0"), UnsafeName),
        (lambda raw: raw.update(prefix="host"), UnsafeName),
        (lambda raw: raw.update(version=99), FabricError),
        (lambda raw: raw.pop("bridge"), FabricError),
    ],
)
def test_foreign_or_malformed_state_is_refused(edit: object, error: type[Exception]) -> None:
    raw = json.loads(sample_state().to_json())
    edit(raw)  # type: ignore[operator]
    with pytest.raises(error):
        FabricState.from_json(json.dumps(raw), source="state.json")


def test_refused_state_file_is_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "fabric.json"
    raw = json.loads(sample_state().to_json())
    raw["fabric_netns"] = "default"
    path.write_text(json.dumps(raw))
    with pytest.raises(UnsafeName):
        cleanup_from_state_sync(path)
    assert path.exists()


def test_missing_state_file_means_nothing_to_clean(tmp_path: Path) -> None:
    assert cleanup_from_state_sync(tmp_path / "none.json") == []


def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "fabric.json"
    state = sample_state()
    state.save(path)
    state.pods.clear()
    state.save(path)
    assert FabricState.from_json(path.read_text(), source=str(path)).pods == {}
    assert [p.name for p in tmp_path.iterdir()] == ["fabric.json"]


@pytest.mark.parametrize("subnet", ["10.0.0.0/24", "198.20.0.0/16", "198.18.0.0/31", "127.0.0.0/8"])
def test_subnet_outside_benchmark_space_is_refused(tmp_path: Path, subnet: str) -> None:
    with pytest.raises(FabricError, match=r"198\.18\.0\.0/15"):
        Fabric(tmp_path / "f.json", prefix="am-abc", subnet=subnet)


def test_fabric_names_follow_the_prefix(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "f.json", prefix="am-abc", subnet="198.19.4.0/24")
    assert (fabric.fabric_netns, fabric.bridge, fabric.gateway) == (
        "am-abc-fabric",
        "am-abc-br",
        "198.19.4.1",
    )


async def test_pods_need_a_created_fabric(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "f.json", prefix="am-abc")
    with pytest.raises(FabricError, match="fabric not created"):
        await fabric.create_pod("web")
