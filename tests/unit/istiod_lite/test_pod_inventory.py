"""The runner's pods.json as istiod_lite follows it: parsing with field-named errors, and the Store-shaped
follower (revision moves on change, errors keep the previous pods, a removed file means no runner)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from istiod_lite.pod_inventory import InventoryInvalid, Pod, PodInventoryFile, parse_inventory

POD = {
    "name": "search-0",
    "namespace": "prod",
    "ip": "127.9.1.0",
    "node": "node-1",
    "labels": {"app": "search"},
    "service_account": "search",
    "deployment": "search",
    "container_ports": [{"name": "http", "port": 8080}, {"name": None, "port": 9090}],
    "kind": "pod",
}


def _doc(*pods: object, version: object = 1) -> str:
    return json.dumps({"version": version, "pods": list(pods)})


def test_a_runner_pod_becomes_a_pod_with_named_container_ports() -> None:
    assert parse_inventory(_doc(POD)) == (
        Pod(
            name="search-0",
            namespace="prod",
            ip="127.9.1.0",
            node="node-1",
            labels={"app": "search"},
            service_account="search",
            deployment="search",
            container_ports={"http": 8080},
        ),
    )


def test_optional_fields_take_kubernetes_defaults() -> None:
    [pod] = parse_inventory(_doc({"name": "a", "namespace": "ns", "ip": None}))
    assert (pod.ip, pod.node, pod.service_account, pod.kind, dict(pod.labels)) == (None, "", "default", "pod", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        (_doc(POD, version=2), "got version 2"),
        (json.dumps({"version": 1, "pods": {}}), "'pods' must be a list"),
        (_doc(5), "pods[0]: expected an object, got int"),
        (_doc({**POD, "name": ""}), "pods[0].name: expected a non-empty string"),
        (_doc(POD, {**POD, "ip": "10.0.0.300"}), "pods[1].ip: '10.0.0.300' is not an IP address"),
        (_doc({**POD, "labels": {"app": 1}}), "pods[0].labels: expected a map of strings"),
        (_doc({**POD, "container_ports": [{"name": "x"}]}), "pods[0].container_ports[0]: expected {name, port}"),
    ],
    ids=["json", "version", "pods list", "entry", "name", "ip", "labels", "ports"],
)
def test_a_malformed_inventory_names_the_field(text: str, message: str) -> None:
    with pytest.raises(InventoryInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_inventory(text)


def _ips(follower: PodInventoryFile) -> list[str | None] | None:
    return None if follower.pods is None else [pod.ip for pod in follower.pods]


def test_the_follower_moves_its_revision_keeps_good_pods_on_errors_and_forgets_a_removed_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pods.json"
    follower = PodInventoryFile(path)
    assert not follower.scan() and _ips(follower) is None and follower.revision == 0

    path.write_text(_doc(POD))
    assert follower.scan() and follower.revision == 1
    assert _ips(follower) == ["127.9.1.0"]
    assert follower.list() == {} and follower.errors == {}

    path.write_text(_doc({**POD, "ip": "nope"}) + " ")
    assert not follower.scan() and follower.revision == 1
    assert _ips(follower) == ["127.9.1.0"]
    [(source, (error,))] = follower.errors.items()
    assert source == str(path) and "pods[0].ip: 'nope' is not an IP address" in error
    assert "the previous pods stay in force" in error

    tmp = tmp_path / ".pods.json.tmp"
    tmp.write_text(_doc({**POD, "ip": "127.9.1.7"}))
    os.replace(tmp, path)  # how the runner writes it
    assert follower.scan() and _ips(follower) == ["127.9.1.7"] and follower.errors == {}

    path.unlink()
    assert follower.scan() and _ips(follower) is None and follower.revision == 3
