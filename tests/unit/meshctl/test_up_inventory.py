"""pods.json is a contract with istiod_lite: what the runner writes, istiod_lite's reader accepts as is."""

from __future__ import annotations

import json
from pathlib import Path

from istiod_lite.pod_inventory import parse_inventory
from meshctl.runner.inventory import PodRecord, inventory_json, write_inventory

PODS = [
    PodRecord(
        name="search-1", namespace="prod", ip="127.9.1.1", node="node-2", labels={"app": "search"},
        service_account="search", deployment="search", container_ports=(("http", 8080), (None, 9090)),
    ),
    PodRecord(
        name="waypoint-0", namespace="prod", ip="127.9.1.7", node="", service_account="waypoint",
        labels={"gateway.networking.k8s.io/gateway-name": "waypoint"}, deployment="waypoint", kind="waypoint",
    ),
    PodRecord(
        name="search-0", namespace="prod", ip="127.9.1.0", node="node-1", labels={"app": "search"},
        service_account="search", deployment="search",
    ),
]


def test_istiod_lite_reads_what_the_runner_writes(tmp_path: Path) -> None:
    write_inventory(tmp_path, PODS)
    pods = parse_inventory((tmp_path / "pods.json").read_text())
    assert [(p.namespace, p.name) for p in pods] == [("prod", "search-0"), ("prod", "search-1"), ("prod", "waypoint-0")]
    search = pods[1]
    assert (search.ip, search.node, search.service_account, search.deployment) == (
        "127.9.1.1", "node-2", "search", "search"
    )
    assert dict(search.labels) == {"app": "search"}
    assert dict(search.container_ports) == {"http": 8080}  # unnamed ports cannot be a targetPort name
    assert pods[2].kind == "waypoint" and pods[2].node == ""


def test_the_file_is_replaced_whole(tmp_path: Path) -> None:
    write_inventory(tmp_path, PODS)
    write_inventory(tmp_path, PODS[:1])
    assert json.loads((tmp_path / "pods.json").read_text()) == inventory_json(PODS[:1])
    assert [p.name for p in tmp_path.iterdir()] == ["pods.json"]  # no temporary left behind
