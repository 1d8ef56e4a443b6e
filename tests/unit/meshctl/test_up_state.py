"""status.json: the names `meshctl status -o json` promises, and how readers treat a dead runner."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meshctl.runner.state import (
    MeshNotRunning,
    MeshStatus,
    PodNotFound,
    PodStatus,
    ProxyStatus,
    merge_push_status,
    pods_of,
    read_status,
    remove_status,
    write_status,
)


def sample(pid: int) -> MeshStatus:
    status = MeshStatus(runner_pid=pid, state_dir="/x", capture="proxy", nodes={"node-1": "127.9.0.1"})
    status.proxies["waypoint-prod-waypoint"] = ProxyStatus(kind="waypoint", name="waypoint-prod-waypoint", node="")
    status.proxies["istiod"] = ProxyStatus(kind="istiod", name="istiod", node="")
    status.proxies["ztunnel-node-1"] = ProxyStatus(
        kind="ztunnel", name="ztunnel-node-1", node="node-1", admin="http://127.9.0.1:15000",
        metrics="http://127.9.0.1:15020/metrics", ready=True, pid=11,
    )
    for name, ready in (("search-1", False), ("search-0", True)):
        status.pods[f"prod/{name}"] = PodStatus(
            namespace="prod", name=name, deployment="search", ip="127.9.1.0", node="node-1",
            identity="spiffe://cluster.local/ns/prod/sa/search", ready=ready, env={"POD_IP": "127.9.1.0"},
        )
    return status


def test_the_json_keeps_the_promised_names(tmp_path: Path) -> None:
    write_status(tmp_path, sample(os.getpid()))
    document = read_status(tmp_path)
    assert {"namespace", "name", "deployment", "ip", "node", "identity", "ready"} <= set(document["pods"][0])
    assert {"kind", "name", "node", "admin", "metrics", "ready"} <= set(document["proxies"][0])
    assert [p["kind"] for p in document["proxies"]] == ["istiod", "ztunnel", "waypoint"]
    assert [p["name"] for p in document["pods"]] == ["search-0", "search-1"]  # sorted for stable output
    assert document["nodes"] == [{"name": "node-1", "address": "127.9.0.1"}]


def test_no_file_means_no_mesh(tmp_path: Path) -> None:
    with pytest.raises(MeshNotRunning, match="no mesh is running") as caught:
        read_status(tmp_path)
    assert "meshctl up" in str(caught.value)


def test_a_file_left_by_a_dead_runner_is_not_believed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_status(tmp_path, sample(dead.pid))
    with pytest.raises(MeshNotRunning, match=f"pid {dead.pid}.*no longer running"):
        read_status(tmp_path)


def test_garbage_is_reported_not_raised_raw(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text("[1, 2")
    with pytest.raises(MeshNotRunning, match="cannot read"):
        read_status(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps([1, 2]))
    with pytest.raises(MeshNotRunning, match="does not hold a status object"):
        read_status(tmp_path)


def test_remove_status_is_idempotent(tmp_path: Path) -> None:
    write_status(tmp_path, sample(os.getpid()))
    remove_status(tmp_path)
    remove_status(tmp_path)
    assert not (tmp_path / "status.json").exists()


def test_pods_of_puts_ready_pods_first_and_names_what_exists_otherwise(tmp_path: Path) -> None:
    document = sample(os.getpid()).to_json()
    assert [p["name"] for p in pods_of(document, "prod", "search")] == ["search-0", "search-1"]
    with pytest.raises(PodNotFound, match="prod/client") as caught:
        pods_of(document, "prod", "client")
    assert "running deployments: prod/search" in str(caught.value)


def test_push_state_per_ztunnel_is_the_worst_over_its_types() -> None:
    document = sample(os.getpid()).to_json()
    rows = [
        {"proxy": "node-1", "type": "workload", "state": "SYNCED", "acked_version": "a"},
        {"proxy": "node-1", "type": "service", "state": "NACKED", "acked_version": "b"},
        {"proxy": "node-2", "type": "workload", "state": "STALE", "acked_version": "c"},
    ]
    merged = {p["name"]: p for p in merge_push_status(document, {"proxies": rows})["proxies"]}
    assert merged["ztunnel-node-1"]["sync"] == "NACKED"
    assert merged["ztunnel-node-1"]["config"] == {"workload": "a", "service": "b"}
    assert "sync" not in merged["istiod"]
    unknown = {p["name"]: p for p in merge_push_status(document, None)["proxies"]}
    assert unknown["ztunnel-node-1"]["sync"] == "unknown"


def test_a_waypoint_s_push_state_is_found_by_the_workload_its_token_proves() -> None:
    document = sample(os.getpid()).to_json()
    document["proxies"].append({"kind": "waypoint", "name": "waypoint-prod-waypoint", "node": "",
                                "push_id": "workload/prod/waypoint"})
    rows = [{"proxy": "workload/prod/waypoint", "type": "waypoint", "state": "SYNCED", "acked_version": "v7"}]
    merged = {p["name"]: p for p in merge_push_status(document, {"proxies": rows})["proxies"]}
    assert merged["waypoint-prod-waypoint"]["sync"] == "SYNCED"
    assert merged["waypoint-prod-waypoint"]["config"] == {"waypoint": "v7"}
